use ferrometal::Buffer;

use crate::devices;

#[test]
fn async_work_runs_in_order() {
    for device in devices() {
        let stream = device.new_stream().unwrap();
        let mut buffer = Buffer::<f32>::zeros(&device, 1 << 20).unwrap();
        let mut data: Vec<f32> = (0..1 << 20).map(|i| i as f32).collect();
        buffer.write_async(&stream, 0, &data).unwrap();
        // Staged: overwriting the source now must not change what arrives.
        data.iter_mut().for_each(|x| *x = -1.0);
        buffer.fill_async(&stream, 0.0).unwrap();
        let mut second = Buffer::<f32>::zeros(&device, 1 << 20).unwrap();
        let ramp: Vec<f32> = (0..1 << 20).map(|i| (i * 2) as f32).collect();
        second.write_async(&stream, 0, &ramp).unwrap();
        buffer
            .copy_from_async(&stream, 0, &second, 0, 1 << 20)
            .unwrap();
        let pending = buffer.read_async(&stream, 10, 3).unwrap();
        assert_eq!(pending.wait().unwrap(), [20.0, 22.0, 24.0]);
        stream.synchronize().unwrap();
        stream.close().unwrap();
    }
}

#[test]
fn staged_writes_do_not_depend_on_the_source_afterwards() {
    for device in devices() {
        let stream = device.new_stream().unwrap();
        let mut buffers: Vec<Buffer<i32>> = (0..8)
            .map(|_| Buffer::zeros(&device, 4096).unwrap())
            .collect();
        for (i, buffer) in buffers.iter_mut().enumerate() {
            let data = vec![i as i32; 4096];
            buffer.write_async(&stream, 0, &data).unwrap();
            drop(data); // freed before the device necessarily copied it
        }
        stream.synchronize().unwrap();
        for (i, buffer) in buffers.iter().enumerate() {
            assert!(
                buffer.to_vec().unwrap().iter().all(|&x| x == i as i32),
                "{device:?} buffer {i}"
            );
        }
    }
}

#[test]
fn dropping_a_pending_read_waits() {
    for device in devices() {
        let stream = device.new_stream().unwrap();
        let buffer = Buffer::full(&device, 1 << 16, 3u8).unwrap();
        let pending = buffer.read_async(&stream, 0, 1 << 16).unwrap();
        drop(pending);
        drop(buffer); // freed in the stream's order
        stream.synchronize().unwrap();
    }
}

#[test]
fn a_stream_of_another_device_is_refused() {
    let all = devices();
    if all.len() < 2 {
        eprintln!("skipping: needs two devices");
        return;
    }
    let stream = all[1].new_stream().unwrap();
    let mut buffer = Buffer::<f32>::zeros(&all[0], 4).unwrap();
    let error = buffer.write_async(&stream, 0, &[1.0]).unwrap_err();
    assert!(
        error.message().contains("argument 'stream' belongs to"),
        "{error}"
    );
}
