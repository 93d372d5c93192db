//! Misuse that the safe API rules out, driven through the raw ABI: every
//! case must return its documented status and a message naming the
//! function and argument, and must never crash.

use ferrometal::sys::{self, *};
use ferrometal::{Buffer, Device, Error};

fn last_error() -> String {
    // SAFETY: a NUL-terminated thread-local string, copied at once.
    unsafe { std::ffi::CStr::from_ptr(sys::fm_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[track_caller]
fn expect(status: fm_status, expected: fm_status, message_start: &str) {
    let message = last_error();
    assert_eq!(
        status,
        expected,
        "got {:?}, expected {:?}: {message}",
        status_name(status),
        status_name(expected)
    );
    assert!(
        message.starts_with(message_start),
        "message {message:?} should start with {message_start:?}"
    );
}

fn status_name(status: fm_status) -> String {
    // SAFETY: fm_status_str accepts any value and returns a static string.
    unsafe { std::ffi::CStr::from_ptr(sys::fm_status_str(status)) }
        .to_string_lossy()
        .into_owned()
}

fn new_buffer(device: &Device, dtype: fm_dtype, count: usize) -> usize {
    let mut raw = 0;
    // SAFETY: valid out-pointer, live device.
    assert_eq!(
        unsafe { fm_buffer_new(&mut raw, device.as_raw(), dtype, count) },
        FM_OK,
        "{}",
        last_error()
    );
    raw
}

#[test]
fn zero_forged_freed_and_wrong_kind_handles_are_refused() {
    let device = Device::cpu().unwrap();
    let buffer = new_buffer(&device, FM_DTYPE_F32, 4);
    let mut count = 0;
    // SAFETY (this whole test): every call gets valid out-pointers; the
    // handles are the subject under test and are checked by the library.
    unsafe {
        expect(
            fm_buffer_count(&mut count, 0),
            FM_ERR_INVALID_HANDLE,
            "fm_buffer_count: argument 'buffer' is a zero handle",
        );
        for forged in [
            0xdead_beef_usize,
            buffer ^ (1 << 40),
            // Another generation of the same slot. (Not `buffer + 1`: that
            // is the next slot, which a test running in parallel may hold.)
            buffer ^ (1 << 33),
            usize::MAX,
        ] {
            expect(
                fm_buffer_count(&mut count, forged),
                FM_ERR_INVALID_HANDLE,
                "fm_buffer_count: argument 'buffer'",
            );
        }
        expect(
            fm_buffer_count(&mut count, device.as_raw()),
            FM_ERR_INVALID_HANDLE,
            "fm_buffer_count: argument 'buffer' is a device handle, expected a buffer handle",
        );
        let mut info = std::mem::zeroed();
        expect(
            fm_device_info_get(&mut info, buffer),
            FM_ERR_INVALID_HANDLE,
            "fm_device_info_get: argument 'device' is a buffer handle",
        );

        assert_eq!(fm_release(buffer), FM_OK);
        expect(
            fm_buffer_count(&mut count, buffer),
            FM_ERR_INVALID_HANDLE,
            "fm_buffer_count: argument 'buffer'",
        );
        assert!(last_error().contains("released"), "{}", last_error());
        expect(
            fm_release(buffer),
            FM_ERR_INVALID_HANDLE,
            "fm_release: argument 'handle'",
        );
        expect(
            fm_retain(buffer),
            FM_ERR_INVALID_HANDLE,
            "fm_retain: argument 'handle'",
        );
        expect(fm_release(0), FM_ERR_INVALID_HANDLE, "fm_release");

        // A slot reused by a new object must not revive the old handle.
        let reused: Vec<usize> = (0..64)
            .map(|_| new_buffer(&device, FM_DTYPE_U8, 1))
            .collect();
        expect(
            fm_buffer_count(&mut count, buffer),
            FM_ERR_INVALID_HANDLE,
            "fm_buffer_count",
        );
        for handle in reused {
            assert_eq!(fm_release(handle), FM_OK);
        }
    }
}

#[test]
fn retain_adds_a_reference() {
    let device = Device::cpu().unwrap();
    let buffer = new_buffer(&device, FM_DTYPE_I32, 2);
    let mut count = 0;
    // SAFETY: valid out-pointers; handles are checked by the library.
    unsafe {
        assert_eq!(fm_retain(buffer), FM_OK);
        assert_eq!(fm_release(buffer), FM_OK);
        assert_eq!(
            fm_buffer_count(&mut count, buffer),
            FM_OK,
            "one reference is left"
        );
        assert_eq!(count, 2);
        assert_eq!(fm_release(buffer), FM_OK);
        expect(fm_release(buffer), FM_ERR_INVALID_HANDLE, "fm_release");
    }
}

#[test]
fn null_pointers_are_refused() {
    let device = Device::cpu().unwrap();
    let buffer = new_buffer(&device, FM_DTYPE_F32, 4);
    // SAFETY: the NULL pointers are what is tested; the library checks them.
    unsafe {
        expect(
            fm_buffer_new(std::ptr::null_mut(), device.as_raw(), FM_DTYPE_F32, 1),
            FM_ERR_INVALID_ARGUMENT,
            "fm_buffer_new: argument 'out_buffer' is NULL",
        );
        expect(
            fm_device_open(std::ptr::null_mut(), FM_BACKEND_CPU, 0),
            FM_ERR_INVALID_ARGUMENT,
            "fm_device_open: argument 'out_device' is NULL",
        );
        expect(
            fm_device_open_best(std::ptr::null_mut()),
            FM_ERR_INVALID_ARGUMENT,
            "fm_device_open_best",
        );
        expect(
            fm_device_count(std::ptr::null_mut(), FM_BACKEND_CPU),
            FM_ERR_INVALID_ARGUMENT,
            "fm_device_count",
        );
        expect(
            fm_device_info_get(std::ptr::null_mut(), device.as_raw()),
            FM_ERR_INVALID_ARGUMENT,
            "fm_device_info_get",
        );
        expect(
            fm_device_pool_stats(std::ptr::null_mut(), device.as_raw()),
            FM_ERR_INVALID_ARGUMENT,
            "fm_device_pool_stats",
        );
        expect(
            fm_stream_new(std::ptr::null_mut(), device.as_raw()),
            FM_ERR_INVALID_ARGUMENT,
            "fm_stream_new",
        );
        expect(
            fm_buffer_count(std::ptr::null_mut(), buffer),
            FM_ERR_INVALID_ARGUMENT,
            "fm_buffer_count",
        );
        expect(
            fm_buffer_dtype(std::ptr::null_mut(), buffer),
            FM_ERR_INVALID_ARGUMENT,
            "fm_buffer_dtype",
        );
        expect(
            fm_buffer_nbytes(std::ptr::null_mut(), buffer),
            FM_ERR_INVALID_ARGUMENT,
            "fm_buffer_nbytes",
        );
        expect(
            fm_buffer_device(std::ptr::null_mut(), buffer),
            FM_ERR_INVALID_ARGUMENT,
            "fm_buffer_device",
        );
        expect(
            fm_dtype_size(std::ptr::null_mut(), FM_DTYPE_F32),
            FM_ERR_INVALID_ARGUMENT,
            "fm_dtype_size",
        );
        expect(
            fm_backend_is_compiled(std::ptr::null_mut(), FM_BACKEND_CPU),
            FM_ERR_INVALID_ARGUMENT,
            "fm_backend_is_compiled",
        );
        expect(
            fm_buffer_write(buffer, 0, std::ptr::null(), 1, 0),
            FM_ERR_INVALID_ARGUMENT,
            "fm_buffer_write: argument 'src' is NULL",
        );
        expect(
            fm_buffer_read(buffer, 0, std::ptr::null_mut(), 1, 0),
            FM_ERR_INVALID_ARGUMENT,
            "fm_buffer_read: argument 'dst' is NULL",
        );
        // NULL with nothing to copy is fine.
        assert_eq!(fm_buffer_write(buffer, 0, std::ptr::null(), 0, 0), FM_OK);
        assert_eq!(fm_release(buffer), FM_OK);
    }
}

#[test]
fn unknown_enums_and_overflowing_sizes_are_refused() {
    let device = Device::cpu().unwrap();
    let mut raw = 0;
    let mut size = 0;
    let mut count = 0;
    // SAFETY: valid out-pointers; enum values out of range are under test.
    unsafe {
        expect(
            fm_buffer_new(&mut raw, device.as_raw(), 77, 1),
            FM_ERR_INVALID_ARGUMENT,
            "fm_buffer_new: argument 'dtype': unknown dtype 77",
        );
        expect(
            fm_dtype_size(&mut size, FM_DTYPE_COUNT),
            FM_ERR_INVALID_ARGUMENT,
            "fm_dtype_size",
        );
        expect(
            fm_device_count(&mut count, 9),
            FM_ERR_INVALID_ARGUMENT,
            "fm_device_count: argument 'backend'",
        );
        expect(
            fm_device_open(&mut raw, FM_BACKEND_COUNT, 0),
            FM_ERR_INVALID_ARGUMENT,
            "fm_device_open",
        );
        expect(
            fm_buffer_new(&mut raw, device.as_raw(), FM_DTYPE_F32, usize::MAX),
            FM_ERR_INVALID_ARGUMENT,
            "fm_buffer_new: argument 'count'",
        );
        expect(
            fm_buffer_new(&mut raw, device.as_raw(), FM_DTYPE_I32, usize::MAX / 4 + 1),
            FM_ERR_INVALID_ARGUMENT,
            "fm_buffer_new: argument 'count'",
        );
        assert!(last_error().contains("overflow"), "{}", last_error());
        // Within size_t, but beyond what the pool's size classes can express.
        expect(
            fm_buffer_new(&mut raw, device.as_raw(), FM_DTYPE_U8, usize::MAX - 10),
            FM_ERR_OUT_OF_MEMORY,
            "fm_buffer_new",
        );
        assert_eq!(raw, 0, "out-pointer untouched on error");
        for dtype in 0..FM_DTYPE_COUNT {
            assert_eq!(fm_dtype_size(&mut size, dtype), FM_OK);
        }
        assert_eq!(
            std::ffi::CStr::from_ptr(fm_dtype_str(99)).to_str().unwrap(),
            "unknown"
        );
        assert_eq!(
            std::ffi::CStr::from_ptr(fm_backend_str(99))
                .to_str()
                .unwrap(),
            "unknown"
        );
        assert_eq!(status_name(99), "FM_STATUS_UNKNOWN");
        for status in 0..FM_STATUS_COUNT {
            assert!(status_name(status).starts_with("FM_"), "{status}");
        }
    }
}

#[test]
fn ranges_past_the_end_are_refused() {
    for device in crate::devices() {
        let mut buffer = Buffer::<f32>::zeros(&device, 10).unwrap();
        let mut out = [0.0f32; 4];
        let error = buffer.read(8, &mut out).unwrap_err();
        assert!(matches!(error, Error::OutOfRange(_)), "{error}");
        assert_eq!(
            error.message(),
            "fm_buffer_read: argument 'count': src offset 8 + count 4 exceeds the buffer of 10 elements"
        );
        assert!(matches!(
            buffer.read(11, &mut []).unwrap_err(),
            Error::OutOfRange(_)
        ));
        assert!(matches!(
            buffer.read(usize::MAX, &mut out).unwrap_err(),
            Error::OutOfRange(_)
        ));
        assert!(matches!(
            buffer.write(7, &[1.0; 4]).unwrap_err(),
            Error::OutOfRange(_)
        ));
        assert!(matches!(
            buffer.fill_range(5, 6, 1.0).unwrap_err(),
            Error::OutOfRange(_)
        ));
        assert!(matches!(
            buffer.fill_range(usize::MAX, 2, 1.0).unwrap_err(),
            Error::OutOfRange(_)
        ));
        assert!(matches!(
            buffer.copy_within(0, 5, 6).unwrap_err(),
            Error::OutOfRange(_)
        ));
        assert!(matches!(
            buffer.copy_within(5, 0, 6).unwrap_err(),
            Error::OutOfRange(_)
        ));
        let small = Buffer::<f32>::zeros(&device, 2).unwrap();
        assert!(matches!(
            buffer.copy_from(0, &small, 1, 2).unwrap_err(),
            Error::OutOfRange(_)
        ));
        // Nothing was changed by the refused calls.
        assert_eq!(buffer.to_vec().unwrap(), [0.0; 10]);
    }
}

#[test]
fn dtype_mismatches_are_refused() {
    let device = Device::cpu().unwrap();
    let floats = new_buffer(&device, FM_DTYPE_F32, 4);
    let ints = new_buffer(&device, FM_DTYPE_I32, 4);
    // SAFETY: live handles.
    unsafe {
        expect(
            fm_buffer_copy(floats, 0, ints, 0, 4, 0),
            FM_ERR_DTYPE_MISMATCH,
            "fm_buffer_copy: argument 'src' is i32, 'dst' is f32",
        );
        assert_eq!(fm_retain(ints), FM_OK);
        let error = Buffer::<f32>::from_raw(ints).unwrap_err();
        assert!(matches!(error, Error::DtypeMismatch(_)), "{error}");
        assert_eq!(fm_release(floats), FM_OK);
        assert_eq!(fm_release(ints), FM_OK);
    }
}

#[test]
fn unrepresentable_fill_values_are_refused() {
    let device = Device::cpu().unwrap();
    for (dtype, value) in [
        (FM_DTYPE_I32, 1.5),
        (FM_DTYPE_I32, 3e9),
        (FM_DTYPE_U8, 300.0),
        (FM_DTYPE_U8, -1.0),
        (FM_DTYPE_I8, f64::NAN),
        (FM_DTYPE_I8, 128.0),
        (FM_DTYPE_I32, f64::INFINITY),
    ] {
        let buffer = new_buffer(&device, dtype, 3);
        // SAFETY: live handle.
        unsafe {
            assert_eq!(fm_buffer_fill(buffer, 0, 3, 0.0, 0), FM_OK);
            expect(
                fm_buffer_fill(buffer, 0, 3, value, 0),
                FM_ERR_INVALID_ARGUMENT,
                "fm_buffer_fill: argument 'value'",
            );
            assert_eq!(fm_release(buffer), FM_OK);
        }
    }
}

#[test]
fn errors_are_per_thread() {
    let device = Device::cpu().unwrap();
    let mut out = [0u8; 1];
    let buffer = Buffer::<u8>::zeros(&device, 1).unwrap();
    buffer.read(5, &mut out).unwrap_err();
    let here = last_error();
    std::thread::spawn(|| assert_eq!(last_error(), "", "a new thread starts with no error"))
        .join()
        .unwrap();
    assert_eq!(last_error(), here);
}

#[test]
fn many_threads_share_handles_safely() {
    let device = Device::cpu().unwrap();
    let shared = Buffer::from_slice(&device, &(0..1000).collect::<Vec<i32>>()).unwrap();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let device = device.clone();
            let shared = &shared;
            scope.spawn(move || {
                for i in 0..200 {
                    let mut own = Buffer::<i32>::zeros(&device, 100 + i).unwrap();
                    own.fill(t).unwrap();
                    assert!(own.to_vec().unwrap().iter().all(|&x| x == t));
                    let mut window = [0i32; 10];
                    shared.read(i, &mut window).unwrap();
                    assert_eq!(window[0], i as i32);
                    let again = device.clone();
                    drop(again);
                }
            });
        }
    });
}
