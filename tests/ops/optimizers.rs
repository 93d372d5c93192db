//! Step-dependent optimizer factors against float64: Adam, AdamW and Nadam
//! over their first 100 steps, where the bias corrections 1 - beta^t are
//! far from 1 and a cancelling formula loses digits.
//!
//! The loss is sum(w * c) with c fed each step, so the gradient is exactly
//! c and every difference from the float64 reference comes from the update
//! itself. w starts at 0 with a learning rate of 1, so the updates are as
//! large as w and f32's rounding of w hides nothing.

use ferrometal::{DType, Exec, Graph, Optimizer, Tensor};

use crate::common;

const N: usize = 64;
const STEPS: usize = 100;
/// f32 rounding of the moments and of w alone gives 1.8e-6 to 3.7e-6 here;
/// the old 1 - exp(t ln beta) corrections gave 1.2e-5 to 1.7e-5.
const LIMIT: f64 = 5e-6;

/// The gradients fed at step t: a fixed pseudo-random pattern in [-1, 1].
fn gradient(t: usize) -> Vec<f32> {
    (0..N)
        .map(|i| {
            let x = ((i * 7919 + t * 104_729) % 2003) as f32 / 1001.0 - 1.0;
            if x == 0.0 {
                0.5
            } else {
                x
            }
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Rule {
    Adam,
    AdamW,
    Nadam,
}

/// PyTorch's update rules in float64, over w starting at 0.
fn reference(rule: Rule, lr: f64, beta1: f64, beta2: f64, eps: f64, decay: f64) -> Vec<Vec<f64>> {
    let mut w = vec![0.0f64; N];
    let mut m = vec![0.0f64; N];
    let mut v = vec![0.0f64; N];
    let mut mu_product = 1.0f64;
    let mut out = Vec::new();
    for step in 0..STEPS {
        let t = (step + 1) as f64;
        let g0 = gradient(step);
        let bias1 = 1.0 - beta1.powf(t);
        let bias2 = 1.0 - beta2.powf(t);
        let mu = |t: f64| beta1 * (1.0 - 0.5 * 0.96f64.powf(t * 0.004));
        let (mu_t, mu_next) = (mu(t), mu(t + 1.0));
        mu_product *= mu_t;
        for i in 0..N {
            let mut g = g0[i] as f64;
            match rule {
                Rule::AdamW => w[i] -= lr * decay * w[i],
                _ => g += decay * w[i],
            }
            m[i] = beta1 * m[i] + (1.0 - beta1) * g;
            v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
            w[i] -= match rule {
                Rule::Adam | Rule::AdamW => lr / bias1 * m[i] / (v[i].sqrt() / bias2.sqrt() + eps),
                Rule::Nadam => {
                    let denom = (v[i] / bias2).sqrt() + eps;
                    lr * (1.0 - mu_t) / (1.0 - mu_product) * g / denom
                        + lr * mu_next / (1.0 - mu_product * mu_next) * m[i] / denom
                }
            };
        }
        out.push(w.clone());
    }
    out
}

/// The worst error of `optimizer`'s w over the steps, relative to the
/// reference's |w| (at least 1).
fn worst_error(optimizer: &Optimizer, want: &[Vec<f64>]) -> f64 {
    let g = Graph::new().unwrap();
    let c = g.placeholder("c", DType::F32, &[N as i64]).unwrap();
    let w = g.variable_from("w", &[N], &[0.0f32; N]).unwrap();
    let loss = g.sum(g.mul(w, c).unwrap(), &[], false).unwrap();
    let grads = g.gradients(loss, &[w]).unwrap();
    let step = g.optimizer(optimizer, &[(w, grads[0])]).unwrap();
    let mut worst = 0.0f64;
    for device in common::graph_devices() {
        let mut exec: Exec = g.compile(&device).unwrap();
        for (t, want) in want.iter().enumerate() {
            let fed = Tensor::from_slice(&device, &[N], &gradient(t)).unwrap();
            exec.run(&[(c, &fed)], &[step]).unwrap();
            let got = exec.read_variable("w").unwrap();
            for (a, b) in got.iter().zip(want) {
                worst = worst.max((*a as f64 - b).abs() / b.abs().max(1.0));
            }
        }
    }
    worst
}

#[test]
fn adam_family_matches_float64_over_100_steps() {
    // beta2 = 0.999 makes 1 - beta2^t small for many steps: the case where
    // 1 - exp(t ln beta2) in f32 was 2e-5 off.
    let (beta1, beta2, eps) = (0.9, 0.999, 1e-8);
    let cases = [
        ("adam", Rule::Adam, Optimizer::adam(1.0), 0.0),
        (
            "adam, weight decay",
            Rule::Adam,
            Optimizer::adam(1.0).weight_decay(0.01),
            0.01,
        ),
        (
            "adamw",
            Rule::AdamW,
            Optimizer::adamw(1.0).weight_decay(0.01),
            0.01,
        ),
        ("nadam", Rule::Nadam, Optimizer::nadam(1.0), 0.0),
    ];
    let mut failures = Vec::new();
    for (name, rule, optimizer, decay) in cases {
        let want = reference(rule, 1.0, beta1, beta2, eps, decay);
        let worst = worst_error(&optimizer, &want);
        eprintln!("{name}: worst error over {STEPS} steps {worst:.2e}");
        if worst > LIMIT {
            failures.push(format!("{name}: {worst:.2e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "errors against float64 above {LIMIT:e}: {failures:?}"
    );
}
