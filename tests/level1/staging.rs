use ferrometal::{sys, Device, Error, Staging, Tensor};

use crate::devices;

#[test]
fn staged_data_reaches_the_device_whole() {
    for device in devices() {
        // Larger than one pinned staging block of the CUDA backend, odd size.
        let len = 3_000_001;
        let mut staging = Staging::<f32>::new(&device, len).unwrap();
        assert_eq!(staging.len(), len);
        assert!(staging.as_slice().iter().all(|&v| v == 0.0), "not zeroed");
        for (i, v) in staging.as_mut_slice().iter_mut().enumerate() {
            *v = (i as f32).sin();
        }
        let tensor = Tensor::from_staging(&device, &[len], &staging).unwrap();
        assert_eq!(
            tensor.to_vec::<f32>().unwrap(),
            staging.as_slice(),
            "{device:?}"
        );
        // On a stream, and a prefix of a longer staging buffer.
        let stream = device.new_stream().unwrap();
        let ints = {
            let mut s = Staging::<i32>::new(&device, 10).unwrap();
            s.as_mut_slice()
                .copy_from_slice(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
            s
        };
        let t = Tensor::from_staging_on(&device, &[2, 3], &ints, Some(&stream)).unwrap();
        assert_eq!(t.to_vec::<i32>().unwrap(), [0, 1, 2, 3, 4, 5]);
    }
}

#[test]
fn bad_staged_writes_are_refused() {
    for device in devices() {
        let staging = Staging::<f32>::new(&device, 4).unwrap();
        let error = Tensor::from_staging(&device, &[5], &staging).unwrap_err();
        assert!(matches!(error, Error::ShapeMismatch(_)), "{error}");
        let dst = Tensor::zeros(&device, ferrometal::DType::F32, &[4]).unwrap();
        let mut buffer = 0;
        // SAFETY: valid out-pointer, live tensor.
        assert_eq!(
            unsafe { sys::fm_tensor_buffer(&mut buffer, dst.as_raw()) },
            sys::FM_OK
        );
        // Through the C ABI: ranges, part of an element, wrong handle kinds.
        // SAFETY: every handle is live or deliberately wrong; nothing is written on error.
        unsafe {
            let raw = staging.as_raw();
            assert_eq!(
                sys::fm_buffer_write_staged(buffer, 0, raw, 0, 20, 0),
                sys::FM_ERR_OUT_OF_RANGE
            );
            assert_eq!(
                sys::fm_buffer_write_staged(buffer, 3, raw, 0, 8, 0),
                sys::FM_ERR_OUT_OF_RANGE
            );
            assert_eq!(
                sys::fm_buffer_write_staged(buffer, 0, raw, 12, 8, 0),
                sys::FM_ERR_OUT_OF_RANGE
            );
            assert_eq!(
                sys::fm_buffer_write_staged(buffer, 0, raw, 0, 6, 0),
                sys::FM_ERR_INVALID_ARGUMENT
            );
            assert_eq!(
                sys::fm_buffer_write_staged(raw, 0, buffer, 0, 4, 0),
                sys::FM_ERR_INVALID_HANDLE
            );
            let (mut ptr, mut bytes) = (std::ptr::null_mut(), 0);
            assert_eq!(
                sys::fm_staging_data(&mut ptr, &mut bytes, buffer),
                sys::FM_ERR_INVALID_HANDLE
            );
            assert_eq!(sys::fm_staging_data(&mut ptr, &mut bytes, raw), sys::FM_OK);
            assert_eq!(bytes, 16);
            assert_eq!(ptr as usize % 64, 0, "staging memory is 64-byte aligned");
            assert_eq!(sys::fm_release(buffer), sys::FM_OK);
        }
        assert_eq!(
            dst.to_vec::<f32>().unwrap(),
            [0.0; 4],
            "a refused write changed the tensor"
        );
        // A staging buffer of one device cannot feed another's buffer.
        if device.location() != Device::cpu().unwrap().location() {
            let cpu = Device::cpu().unwrap();
            let error = Tensor::from_staging(&cpu, &[4], &staging).unwrap_err();
            assert!(matches!(error, Error::InvalidArgument(_)), "{error}");
        }
    }
}
