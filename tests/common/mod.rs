//! Helpers shared by the integration test binaries.

use ferrometal::{Device, Error};

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
