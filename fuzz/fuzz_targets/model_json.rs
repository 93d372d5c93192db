//! A model spec as JSON (what checkpoints keep): parsed, and when it parses,
//! built into a trainer on the CPU. Any panic is a finding; errors are fine.
#![no_main]

use ferrometal::{Device, Loss, Model, Optimizer, Trainer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = serde_json::from_slice::<Model>(data) else {
        return;
    };
    // A spec can ask for any size; a few million weights at most, so
    // building it stays quick (the lower bound checkpoint::resume uses).
    let units: i64 = model
        .layers
        .iter()
        .map(|l| {
            l.units.clamp(0, 1 << 20)
                * l.kernel_size[0].clamp(0, 64)
                * l.kernel_size[1].clamp(0, 64)
        })
        .sum();
    let inputs: i64 = model
        .input_shape
        .iter()
        .map(|d| d.clamp(&0, &(1 << 20)))
        .product();
    if units > 1 << 16 || inputs > 1 << 16 {
        return;
    }
    let device = Device::cpu().expect("the CPU device");
    let _ = Trainer::new(
        &device,
        &model,
        &Optimizer::adam(1e-3),
        Loss::CrossEntropy {
            label_smoothing: 0.0,
        },
        1,
    );
});
