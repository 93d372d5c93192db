//! The memory pool's statistics. In a test binary of its own, with the
//! tests run one after another, because pool counters are per device and
//! tests running in parallel would move them underneath each other.

use std::sync::Mutex;

use ferrometal::{Buffer, Device, Error};

#[path = "common/mod.rs"]
mod common;

use common::devices;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn clones_and_reopens_share_one_pool() {
    let _serial = serial();
    for device in devices() {
        let again = Device::open(device.location()).unwrap();
        let before = device.pool_stats().unwrap();
        let buffer = Buffer::<f32>::zeros(&again, 1000).unwrap();
        let during = device.pool_stats().unwrap();
        assert!(
            during.bytes_in_use >= before.bytes_in_use + 4000,
            "{before:?} -> {during:?}"
        );
        assert_eq!(device, again);
        drop(buffer);
    }
}

#[test]
fn pool_caches_and_trims() {
    let _serial = serial();
    for device in devices() {
        device.trim_pool().unwrap();
        let start = device.pool_stats().unwrap();
        let buffer = Buffer::<f32>::zeros(&device, 250_000).unwrap();
        let held = device.pool_stats().unwrap();
        assert!(
            held.bytes_in_use >= start.bytes_in_use + 1_000_000,
            "{start:?} -> {held:?}"
        );
        assert_eq!(held.allocations, start.allocations + 1);
        assert!(held.peak_bytes_in_use >= held.bytes_in_use);
        drop(buffer);
        device.synchronize().unwrap();
        let freed = device.pool_stats().unwrap();
        assert_eq!(freed.bytes_in_use, start.bytes_in_use, "{device:?}");
        assert!(
            freed.bytes_cached >= 1_000_000,
            "{device:?}: freed memory should be cached: {freed:?}"
        );

        // The same size again comes from the cache.
        let again = Buffer::<f32>::zeros(&device, 250_000).unwrap();
        let reused = device.pool_stats().unwrap();
        assert_eq!(
            reused.system_allocations, freed.system_allocations,
            "{device:?}: {reused:?}"
        );
        drop(again);

        device.reset_peak_memory().unwrap();
        let reset = device.pool_stats().unwrap();
        assert_eq!(reset.peak_bytes_in_use, reset.bytes_in_use);
        device.trim_pool().unwrap();
        assert_eq!(device.pool_stats().unwrap().bytes_cached, 0, "{device:?}");
    }
}

#[test]
fn out_of_memory_is_an_error_and_the_pool_survives() {
    let _serial = serial();
    for device in devices() {
        let before = device.pool_stats().unwrap();
        // 1 PiB: more than any device or address space holds.
        match Buffer::<u8>::zeros(&device, 1 << 50) {
            Err(Error::OutOfMemory(message)) => {
                assert!(message.starts_with("fm_buffer_new:"), "{message}");
                assert!(message.contains("cannot allocate"), "{message}");
            }
            other => panic!("{device:?}: expected OutOfMemory, got {other:?}"),
        }
        assert_eq!(
            device.pool_stats().unwrap().bytes_in_use,
            before.bytes_in_use
        );
        let small = Buffer::from_slice(&device, &[1.0f32, 2.0]).unwrap();
        assert_eq!(
            small.to_vec().unwrap(),
            [1.0, 2.0],
            "{device:?}: pool unusable after OOM"
        );
    }
}
