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

#[test]
fn old_plans_are_dropped_with_their_memory() {
    use ferrometal::{DType, Graph, Init, Tensor, BATCH};
    let _serial = serial();
    // More distinct batch sizes than an executable keeps plans for (16).
    let device = Device::cpu().unwrap();
    let g = Graph::new().unwrap();
    let x = g.placeholder("x", DType::F32, &[BATCH, 32]).unwrap();
    let mut h = x;
    for layer in 0..4 {
        let w = g
            .variable(
                &format!("w{layer}"),
                &[256, if layer == 0 { 32 } else { 256 }],
                Init::HeUniform { seed: layer },
            )
            .unwrap();
        h = g.relu(g.linear(h, w, None).unwrap()).unwrap();
    }
    let mut exec = g.compile(&device).unwrap();
    let data: Vec<f32> = (0..64 * 32).map(|i| (i as f32 * 0.37).sin()).collect();
    let full = Tensor::from_slice(&device, &[64, 32], &data).unwrap();
    let reference = exec.run(&[(x, &full)], &[h]).unwrap()[0]
        .to_vec::<f32>()
        .unwrap();
    let before = device.pool_stats().unwrap().bytes_in_use;
    for round in 0..2 {
        for batch in 1..=64usize {
            let input = Tensor::from_slice(&device, &[batch, 32], &data[..batch * 32]).unwrap();
            let out = exec.run(&[(x, &input)], &[h]).unwrap()[0]
                .to_vec::<f32>()
                .unwrap();
            assert_eq!(
                out[..],
                reference[..batch * 256],
                "round {round}, batch {batch}"
            );
        }
    }
    // Keeping all 64 plans would hold about sum(batch) x 256 x 8 floats of
    // arenas (8.5 MB); at most 16 of the largest are about a third of that.
    let held = device
        .pool_stats()
        .unwrap()
        .bytes_in_use
        .saturating_sub(before);
    assert!(held < 4_000_000, "{held} bytes still held by cached plans");
}
