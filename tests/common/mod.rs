//! Helpers shared by the integration test binaries.

use ferrometal::{Device, Error, Trainer};

/// The CPU plus every GPU this build can reach.
pub fn devices() -> Vec<Device> {
    let mut devices = vec![Device::cpu().expect("the CPU device always opens")];
    for open in [
        Device::cuda as fn(usize) -> ferrometal::Result<Device>,
        Device::metal,
    ] {
        match open(0) {
            Ok(device) => devices.push(device),
            Err(e @ (Error::NotCompiledWith { .. } | Error::DeviceNotFound(_))) => {
                eprintln!("skipping GPU device: {e}");
            }
            Err(e) => panic!("opening a GPU failed unexpectedly: {e}"),
        }
    }
    devices
}

/// The devices of [`devices`] that run graphs (a backend without a graph
/// executor says so and is skipped).
#[allow(dead_code)] // not every test binary runs graphs
pub fn graph_devices() -> Vec<Device> {
    devices()
        .into_iter()
        .filter(
            |device| match ferrometal::Graph::new().unwrap().compile(device) {
                Ok(_) => true,
                Err(e @ Error::Unsupported(_)) => {
                    eprintln!("skipping {} for graph tests: {e}", device.location());
                    false
                }
                Err(e) => panic!(
                    "compiling an empty graph on {} failed: {e}",
                    device.location()
                ),
            },
        )
        .collect()
}

/// Every state variable of `trainer` (weights, statistics, optimizer
/// state) with its values, by name, to compare whole states.
#[allow(dead_code)] // not every test binary trains
pub fn state_of(trainer: &Trainer) -> Vec<(String, Vec<f32>)> {
    trainer
        .state_names()
        .unwrap()
        .into_iter()
        .map(|(name, _)| {
            let values = trainer.read_state(&name).unwrap();
            (name, values)
        })
        .collect()
}
