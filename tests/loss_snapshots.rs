//! Pinned loss trajectories: the first 50 losses of seeded runs on the CPU
//! (MNIST subsets, two models, two optimizers each), rounded to 4
//! significant digits and compared with the committed insta snapshots. The
//! same runs with 1 and 3 threads must give identical losses.
//!
//! The snapshots come from the AVX2/AVX-512 matmul kernels, which fuse each
//! multiply-add (FMA) and agree bit for bit; on a CPU without AVX2 the
//! baseline kernel rounds twice and a fourth digit can differ.

use ferrometal::data::{Batches, Mnist};
use ferrometal::{Device, Loss, Model, Optimizer, Tensor, Trainer};

fn mlp() -> Model {
    Model::builder([1, 28, 28])
        .flatten()
        .dense(64)
        .relu()
        .dense(10)
        .build()
        .unwrap()
}

fn cnn() -> Model {
    Model::builder([1, 28, 28])
        .conv2d_with(8, 3, 2, 1)
        .batch_norm()
        .relu()
        .max_pool2d(2)
        .flatten()
        .dropout(0.25)
        .dense(10)
        .build()
        .unwrap()
}

fn losses(model: &Model, optimizer: &Optimizer) -> Vec<String> {
    let mnist = Mnist::bundled().unwrap();
    let train = mnist.train.take(50 * 32);
    let device = Device::cpu().unwrap();
    let mut trainer = Trainer::new(
        &device,
        model,
        optimizer,
        Loss::CrossEntropy {
            label_smoothing: 0.0,
        },
        7,
    )
    .unwrap();
    Batches::new(train.len(), 32, true, 7, 1)
        .map(|indices| {
            let images: Vec<f32> = indices
                .iter()
                .flat_map(|&i| train.images[i * 784..(i + 1) * 784].to_vec())
                .collect();
            let labels: Vec<i32> = indices.iter().map(|&i| train.labels[i]).collect();
            let x = Tensor::from_slice(&device, &[indices.len(), 1, 28, 28], &images).unwrap();
            let y = Tensor::from_slice(&device, &[indices.len()], &labels).unwrap();
            format!("{:.4e}", trainer.step_with_loss(&x, &y).unwrap())
        })
        .collect()
}

fn runs() -> Vec<(&'static str, Vec<String>)> {
    vec![
        (
            "mlp_sgd_momentum",
            losses(&mlp(), &Optimizer::sgd(0.05).momentum(0.9)),
        ),
        ("mlp_adam", losses(&mlp(), &Optimizer::adam(1e-3))),
        (
            "cnn_bn_dropout_adamw",
            losses(&cnn(), &Optimizer::adamw(2e-3)),
        ),
        (
            "cnn_bn_dropout_rmsprop",
            losses(&cnn(), &Optimizer::rmsprop(1e-3)),
        ),
    ]
}

#[test]
fn loss_trajectories_match_the_snapshots() {
    if std::env::var("FERROMETAL_SNAPSHOT_CHILD").is_ok() {
        // Child mode: print the trajectories for the thread-count comparison.
        for (name, losses) in runs() {
            println!("trajectory {name} {}", losses.join(","));
        }
        return;
    }
    for (name, losses) in runs() {
        assert_eq!(losses.len(), 50);
        insta::assert_yaml_snapshot!(name, losses);
    }
    let exe = std::env::current_exe().unwrap();
    let trajectories = |threads: &str| {
        let out = std::process::Command::new(&exe)
            .args([
                "loss_trajectories_match_the_snapshots",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FERROMETAL_SNAPSHOT_CHILD", "1")
            .env("FERROMETAL_NUM_THREADS", threads)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<String> = text
            .lines()
            .filter_map(|l| l.find("trajectory ").map(|at| l[at..].to_owned()))
            .collect();
        assert_eq!(lines.len(), 4, "{text}");
        lines
    };
    assert_eq!(
        trajectories("1"),
        trajectories("3"),
        "losses must not depend on the thread count"
    );
}
