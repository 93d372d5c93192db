use ferrometal::{Buffer, Device, Element};
use half::{bf16, f16};

use crate::devices;

fn round_trip<T: Element + PartialEq + std::fmt::Debug>(device: &Device, data: &[T]) {
    let buffer = Buffer::from_slice(device, data).unwrap();
    assert_eq!(buffer.len(), data.len());
    assert_eq!(buffer.to_vec().unwrap(), data, "{device:?} {}", T::DTYPE);
}

#[test]
fn every_dtype_round_trips() {
    for device in devices() {
        round_trip(&device, &[1.5f32, -2.25, f32::MAX, f32::MIN_POSITIVE, 0.0]);
        round_trip(
            &device,
            &[f16::from_f32(1.5), f16::MAX, f16::from_f32(-0.0)],
        );
        round_trip(&device, &[bf16::from_f32(3.0), bf16::MIN, bf16::EPSILON]);
        round_trip(&device, &[i32::MIN, -1, 0, i32::MAX]);
        round_trip(&device, &[i8::MIN, 0, i8::MAX]);
        round_trip(&device, &[0u8, 128, 255]);
        round_trip::<f32>(&device, &[]);
    }
}

#[test]
fn large_buffers_round_trip() {
    // Larger than any staging block a backend keeps, and not a round size.
    let data: Vec<f32> = (0..3_000_001).map(|i| (i as f32).sin()).collect();
    for device in devices() {
        round_trip(&device, &data);
    }
}

#[test]
fn partial_reads_and_writes_touch_only_their_range() {
    for device in devices() {
        let mut buffer = Buffer::<i32>::zeros(&device, 10).unwrap();
        buffer.write(3, &[7, 8, 9]).unwrap();
        assert_eq!(buffer.to_vec().unwrap(), [0, 0, 0, 7, 8, 9, 0, 0, 0, 0]);
        let mut window = [0i32; 4];
        buffer.read(2, &mut window).unwrap();
        assert_eq!(window, [0, 7, 8, 9]);
        buffer.write(10, &[]).unwrap(); // empty at the very end is fine
    }
}

#[test]
fn fill_converts_to_each_dtype() {
    for device in devices() {
        let mut floats = Buffer::<f32>::zeros(&device, 5).unwrap();
        floats.fill_range(1, 3, -0.75).unwrap();
        assert_eq!(floats.to_vec().unwrap(), [0.0, -0.75, -0.75, -0.75, 0.0]);
        assert_eq!(
            Buffer::full(&device, 3, 42u8).unwrap().to_vec().unwrap(),
            [42; 3]
        );
        assert_eq!(
            Buffer::full(&device, 2, -7i8).unwrap().to_vec().unwrap(),
            [-7; 2]
        );
        assert_eq!(
            Buffer::full(&device, 2, i32::MIN)
                .unwrap()
                .to_vec()
                .unwrap(),
            [i32::MIN; 2]
        );
    }
}

/// The native f16/bf16 conversion, checked against the `half` crate for
/// values around every rounding hazard (ties, subnormals, overflow).
#[test]
fn half_precision_fill_matches_reference_rounding() {
    let mut values = vec![
        0.0,
        -0.0,
        1.0,
        -2.5,
        65504.0,
        65519.0,
        65520.0,
        1e9,
        -1e9,
        6.1e-5,
        5.96e-8,
        2.98e-8,
        1e-7,
        1e-10,
        1.0009765625,  // 1 + 2^-10: exact in f16
        1.00048828125, // 1 + 2^-11: a tie, rounds to even (1.0)
        1.00146484375, // 1 + 3*2^-11: a tie, rounds to even (1 + 2^-9)
        f64::INFINITY,
        f64::NEG_INFINITY,
        3.0e38,
        1.0 + 1.0 / 256.0,
        1.0 + 3.0 / 512.0,
    ];
    values.extend(
        (0..200).map(|i| (i as f64 * 0.37).exp2() * if i % 2 == 0 { 1.0 } else { -1.0 } * 1e-9),
    );
    let device = Device::cpu().unwrap();
    let mut halves = Buffer::<f16>::zeros(&device, 1).unwrap();
    let mut brains = Buffer::<bf16>::zeros(&device, 1).unwrap();
    for &value in &values {
        let expected_half = f16::from_f64(value);
        let expected_brain = bf16::from_f64(value);
        fill_raw(&mut halves, value);
        fill_raw(&mut brains, value);
        assert_eq!(
            halves.to_vec().unwrap()[0].to_bits(),
            expected_half.to_bits(),
            "f16 of {value}"
        );
        assert_eq!(
            brains.to_vec().unwrap()[0].to_bits(),
            expected_brain.to_bits(),
            "bf16 of {value}"
        );
    }
    // NaN stays NaN.
    fill_raw(&mut halves, f64::NAN);
    assert!(halves.to_vec().unwrap()[0].is_nan());
    fill_raw(&mut brains, f64::NAN);
    assert!(brains.to_vec().unwrap()[0].is_nan());
}

fn fill_raw<T: Element>(buffer: &mut Buffer<T>, value: f64) {
    // SAFETY: live handle; fm_buffer_fill takes the value by value.
    let status =
        unsafe { ferrometal::sys::fm_buffer_fill(buffer.as_raw(), 0, buffer.len(), value, 0) };
    assert_eq!(status, ferrometal::sys::FM_OK, "fill {value}");
}

#[test]
fn copies_within_and_between_buffers() {
    for device in devices() {
        let source = Buffer::from_slice(&device, &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let mut target = Buffer::<f32>::zeros(&device, 6).unwrap();
        target.copy_from(1, &source, 2, 2).unwrap();
        assert_eq!(target.to_vec().unwrap(), [0.0, 3.0, 4.0, 0.0, 0.0, 0.0]);

        // Overlapping ranges behave like slice::copy_within, both directions.
        let data: Vec<i32> = (0..1000).collect();
        for (from, to) in [(0, 1), (1, 0), (100, 350), (350, 100)] {
            let mut buffer = Buffer::from_slice(&device, &data).unwrap();
            buffer.copy_within(from, to, 600).unwrap();
            let mut expected = data.clone();
            expected.copy_within(from..from + 600, to);
            assert_eq!(
                buffer.to_vec().unwrap(),
                expected,
                "{device:?} {from}->{to}"
            );
        }
    }
}

#[test]
fn copies_between_devices() {
    let all = devices();
    for from in &all {
        for to in &all {
            let source = Buffer::from_slice(from, &[5u8, 6, 7]).unwrap();
            let copy = source.to_device(to).unwrap();
            assert_eq!(copy.device(), to);
            assert_eq!(copy.to_vec().unwrap(), [5, 6, 7]);
        }
    }
}

#[test]
fn raw_handles_round_trip() {
    let device = Device::cpu().unwrap();
    let buffer = Buffer::from_slice(&device, &[1i32, 2]).unwrap();
    let raw = buffer.into_raw();
    // SAFETY: `raw` is the reference `into_raw` gave up.
    let back = unsafe { Buffer::<i32>::from_raw(raw) }.unwrap();
    assert_eq!(back.to_vec().unwrap(), [1, 2]);
    assert_eq!(back.device(), &device);
}
