//! The planner: buffer reuse, any batch size from one graph, and results
//! that do not depend on the batch a sample is in.

use ferrometal::{DType, Device, Graph, Init, Tensor, Value, BATCH};

fn random_values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A 10-layer MLP (width 64) returning the graph's input and output.
fn deep_mlp(g: &Graph) -> (Value<'_>, Value<'_>) {
    let x = g.placeholder("x", DType::F32, &[BATCH, 32]).unwrap();
    let mut h = x;
    let mut width = 32;
    for layer in 0..10 {
        let w = g
            .variable(
                &format!("w{layer}"),
                &[64, width],
                Init::HeUniform { seed: layer },
            )
            .unwrap();
        let b = g
            .variable(&format!("b{layer}"), &[64], Init::Zeros)
            .unwrap();
        h = g.relu(g.linear(h, w, Some(b)).unwrap()).unwrap();
        width = 64;
    }
    (x, h)
}

#[test]
fn buffer_reuse_keeps_peak_below_the_sum_of_intermediates() {
    let g = Graph::new().unwrap();
    let (x, y) = deep_mlp(&g);
    let loss = g.mean(y, &[], false).unwrap();
    let names: Vec<_> = g.variables().unwrap().into_iter().map(|(_, v)| v).collect();
    let grads = g.gradients(loss, &names).unwrap();
    let device = Device::cpu().unwrap();
    let mut exec = g.compile(&device).unwrap();
    let input = Tensor::from_slice(&device, &[128, 32], &random_values(128 * 32, 1)).unwrap();
    let mut fetches = vec![loss];
    fetches.extend(&grads);
    exec.run(&[(x, &input)], &fetches).unwrap();
    let (peak, unshared) = exec.planned_memory().unwrap();
    // 10 layers x (pre-activation + activation) x 128 x 64 floats forward alone.
    assert!(unshared >= 10 * 2 * 128 * 64 * 4, "unshared {unshared}");
    assert!(
        peak < unshared / 2,
        "reuse should at least halve the memory: peak {peak}, unshared {unshared}"
    );
    assert!(peak > 0);
}

#[test]
fn any_batch_size_gives_each_sample_the_same_result() {
    let g = Graph::new().unwrap();
    let (x, y) = deep_mlp(&g);
    let probabilities = g.softmax(y, -1).unwrap();
    let device = Device::cpu().unwrap();
    let mut exec = g.compile(&device).unwrap();
    let data = random_values(64 * 32, 7);
    let mut results = Vec::new();
    for batch in [64usize, 7, 1, 64] {
        let input = Tensor::from_slice(&device, &[batch, 32], &data[..batch * 32]).unwrap();
        let out = exec.run(&[(x, &input)], &[probabilities]).unwrap();
        assert_eq!(out[0].shape(), [batch, 64]);
        results.push(out[0].to_vec::<f32>().unwrap());
    }
    // Bit-identical: a row's arithmetic does not depend on the rows around it.
    assert_eq!(results[1][..], results[0][..7 * 64]);
    assert_eq!(results[2][..], results[0][..64]);
    assert_eq!(
        results[3], results[0],
        "the cached plan must give the same result again"
    );
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    // The pool's size is fixed per process, so compare against a child run
    // with one thread.
    if std::env::var("FERROMETAL_PLANNER_CHILD").is_ok() {
        let g = Graph::new().unwrap();
        let (x, y) = deep_mlp(&g);
        let loss = g.mean(y, &[], false).unwrap();
        let names: Vec<_> = g.variables().unwrap().into_iter().map(|(_, v)| v).collect();
        let grads = g.gradients(loss, &names).unwrap();
        let device = Device::cpu().unwrap();
        let mut exec = g.compile(&device).unwrap();
        let input = Tensor::from_slice(&device, &[96, 32], &random_values(96 * 32, 3)).unwrap();
        let out = exec.run(&[(x, &input)], &grads).unwrap();
        let mut hash = 0xcbf29ce484222325u64;
        for tensor in &out {
            for value in tensor.to_vec::<f32>().unwrap() {
                hash = (hash ^ u64::from(value.to_bits())).wrapping_mul(0x100000001b3);
            }
        }
        println!("checksum {hash:016x}");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let run = |threads: &str| {
        let out = std::process::Command::new(&exe)
            .args([
                "results_do_not_depend_on_the_thread_count",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FERROMETAL_PLANNER_CHILD", "1")
            .env("FERROMETAL_NUM_THREADS", threads)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.find("checksum ")
            .map(|at| text[at..at + 25].to_owned())
            .unwrap_or_else(|| panic!("{text}"))
    };
    assert_eq!(run("1"), run("3"));
}

#[test]
fn assignments_take_effect_after_every_read_of_the_run() {
    let g = Graph::new().unwrap();
    let v = g.variable_from("v", &[3], &[1.0f32, 2.0, 3.0]).unwrap();
    let w = g.variable_from("w", &[3], &[0.0f32; 3]).unwrap();
    let one = g.scalar(1.0).unwrap();
    let bumped = (v + one).unwrap();
    let doubled = g.mul(v, g.scalar(2.0).unwrap()).unwrap();
    let update = g.assign(v, bumped).unwrap();
    let copy = g.assign(w, v).unwrap();
    let step = g.group(&[update, copy]).unwrap();
    let device = Device::cpu().unwrap();
    let mut exec = g.compile(&device).unwrap();
    // The fetched v, a value computed from v, and w's copy all see v before the update.
    let out = exec.run(&[], &[v, doubled, step]).unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0]);
    assert_eq!(out[1].to_vec::<f32>().unwrap(), [2.0, 4.0, 6.0]);
    assert_eq!(exec.read_variable("v").unwrap(), [2.0, 3.0, 4.0]);
    assert_eq!(exec.read_variable("w").unwrap(), [1.0, 2.0, 3.0]);
    // Without the fetch of v the update is done in place; the result is the same rule.
    // A fetched token reads as 0.
    assert_eq!(
        exec.run(&[], &[step]).unwrap()[0].to_vec::<f32>().unwrap(),
        [0.0]
    );
    assert_eq!(exec.read_variable("v").unwrap(), [3.0, 4.0, 5.0]);
    assert_eq!(exec.read_variable("w").unwrap(), [2.0, 3.0, 4.0]);
}
