use ferrometal::{Backend, Device, Error, Location};

use crate::devices;

#[test]
fn cpu_is_always_there() {
    assert!(Backend::Cpu.is_compiled());
    assert_eq!(Backend::Cpu.device_count().unwrap(), 1);
    let cpu = Device::cpu().unwrap();
    assert_eq!(cpu.location(), Location::Cpu);
    let info = cpu.info().unwrap();
    assert!(!info.name.is_empty());
    assert!(info.total_memory > 0);
    assert!(info.free_memory <= info.total_memory);
}

#[test]
fn info_reports_each_device() {
    for device in devices() {
        let info = device.info().unwrap();
        assert_eq!(info.location, device.location());
        assert!(info.total_memory > 0, "{device:?}: total memory is 0");
        assert!(
            info.free_memory <= info.total_memory,
            "{device:?}: free > total"
        );
        eprintln!(
            "{}: {} ({} MiB)",
            device.location(),
            info.name,
            info.total_memory >> 20
        );
    }
}

#[test]
fn best_prefers_a_gpu() {
    let best = Device::best().unwrap();
    let gpu_present = Backend::Cuda.device_count().map(|n| n > 0).unwrap_or(false);
    if gpu_present {
        assert_eq!(best.location(), Location::Cuda(0));
    } else {
        assert_eq!(best.location(), Location::Cpu);
    }
}

#[test]
fn missing_backends_and_devices_are_errors() {
    match Device::cuda(0) {
        Err(Error::NotCompiledWith { feature, .. }) => {
            assert_eq!(feature, "cuda");
            assert!(!Backend::Cuda.is_compiled());
        }
        Err(Error::DeviceNotFound(message)) => {
            assert!(message.contains("cuda device 0"), "{message}")
        }
        Ok(device) => assert_eq!(device.location(), Location::Cuda(0)),
        Err(other) => panic!("unexpected error: {other}"),
    }
    match Device::metal(0) {
        Err(Error::NotCompiledWith { feature, .. }) => assert_eq!(feature, "metal"),
        Err(Error::DeviceNotFound(_)) | Ok(_) => {}
        Err(other) => panic!("unexpected error: {other}"),
    }
    let error = Device::open(Location::Cuda(99)).unwrap_err();
    assert!(
        matches!(
            error,
            Error::NotCompiledWith { .. } | Error::DeviceNotFound(_)
        ),
        "unexpected error: {error}"
    );
    // Opening the CPU as a device index other than 0 goes through the raw ABI.
    let mut raw = 0;
    // SAFETY: valid out-pointer.
    let status =
        unsafe { ferrometal::sys::fm_device_open(&mut raw, ferrometal::sys::FM_BACKEND_CPU, 1) };
    assert_eq!(status, ferrometal::sys::FM_ERR_DEVICE_NOT_FOUND);
    assert_eq!(raw, 0, "out-pointer must stay untouched on error");
}

#[test]
fn cuda_if_available_falls_back_to_cpu() {
    let device = Device::cuda_if_available(0).unwrap();
    assert!(matches!(
        device.location(),
        Location::Cpu | Location::Cuda(0)
    ));
}

#[test]
fn versions_agree() {
    assert!(ferrometal::abi_matches());
    assert_eq!(ferrometal::version(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn device_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Device>();
    assert_send_sync::<ferrometal::Buffer<f32>>();
    fn assert_send<T: Send>() {}
    assert_send::<ferrometal::Stream>();
}
