//! Tensors: a device buffer with a shape.

use crate::device::Device;
use crate::dtype::{DType, Element};
use crate::error::{check, Error, Result};
use crate::handle::OwnedHandle;
use crate::staging::Staging;
use crate::stream::Stream;
use crate::sys;

/// A dense, row-major array on a device, with a shape and a dtype.
pub struct Tensor {
    handle: OwnedHandle,
    shape: Vec<usize>,
    dtype: DType,
    device: Device,
}

// SAFETY: the C ABI allows tensor handles (buffers with a shape) to be used
// from any thread; the data is only written through `&mut self`.
unsafe impl Send for Tensor {}
// SAFETY: as above; `&self` methods only read.
unsafe impl Sync for Tensor {}

/// A shape as the C ABI takes it.
pub(crate) fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

impl Tensor {
    /// A tensor of `shape` holding a copy of `data` (row-major).
    pub fn from_slice<T: Element>(device: &Device, shape: &[usize], data: &[T]) -> Result<Tensor> {
        let count: usize = shape.iter().product();
        if count != data.len() {
            return Err(Error::ShapeMismatch(format!(
                "Tensor::from_slice: shape {shape:?} has {count} elements, data has {}",
                data.len()
            )));
        }
        let mut tensor = Tensor::uninitialized(device, T::DTYPE, shape)?;
        let buffer = tensor.buffer_raw()?;
        // SAFETY: `data` holds `count` elements of T's dtype; the buffer was
        // made for exactly that; the write is synchronous.
        let status =
            unsafe { sys::fm_buffer_write(buffer.raw(), 0, data.as_ptr().cast(), count, 0) };
        check(status)?;
        tensor.dtype = T::DTYPE;
        Ok(tensor)
    }

    /// A tensor of `shape` holding the elements of `staging` (row-major), in
    /// one direct copy (pinned memory on CUDA).
    pub fn from_staging<T: Element>(
        device: &Device,
        shape: &[usize],
        staging: &Staging<T>,
    ) -> Result<Tensor> {
        Tensor::from_staging_on(device, shape, staging, None)
    }

    /// As [`from_staging`](Tensor::from_staging), with the copy on `stream`
    /// when given (a stream other than the one training steps run on, so
    /// that the copy need not wait for the step in flight); returns once the
    /// copy is done either way, so `staging` may be refilled at once.
    pub fn from_staging_on<T: Element>(
        device: &Device,
        shape: &[usize],
        staging: &Staging<T>,
        stream: Option<&Stream>,
    ) -> Result<Tensor> {
        let count: usize = shape.iter().product();
        if count > staging.len() {
            return Err(Error::ShapeMismatch(format!(
                "Tensor::from_staging: shape {shape:?} has {count} elements, the staging buffer {}",
                staging.len()
            )));
        }
        let mut tensor = Tensor::uninitialized(device, T::DTYPE, shape)?;
        let buffer = tensor.buffer_raw()?;
        let queue = stream.map_or(0, Stream::as_raw);
        // SAFETY: live handles; the byte count is within both buffers (checked
        // above and by the library); the staging memory outlives the copy,
        // which is waited for below.
        check(unsafe {
            sys::fm_buffer_write_staged(
                buffer.raw(),
                0,
                staging.as_raw(),
                0,
                count * T::DTYPE.size(),
                queue,
            )
        })?;
        if let Some(stream) = stream {
            stream.synchronize()?;
        }
        tensor.dtype = T::DTYPE;
        Ok(tensor)
    }

    /// A tensor of zeros.
    pub fn zeros(device: &Device, dtype: DType, shape: &[usize]) -> Result<Tensor> {
        let tensor = Tensor::uninitialized(device, dtype, shape)?;
        let buffer = tensor.buffer_raw()?;
        // SAFETY: live handle; the fill covers the whole buffer.
        check(unsafe { sys::fm_buffer_fill(buffer.raw(), 0, tensor.len(), 0.0, 0) })?;
        Ok(tensor)
    }

    fn uninitialized(device: &Device, dtype: DType, shape: &[usize]) -> Result<Tensor> {
        let mut raw = 0;
        let dims = dims(shape);
        // SAFETY: valid out-pointer, dims has `shape.len()` entries.
        check(unsafe {
            sys::fm_tensor_new(
                &mut raw,
                device.as_raw(),
                dtype.to_sys(),
                dims.as_ptr(),
                dims.len(),
            )
        })?;
        // SAFETY: a new reference we now own.
        let handle = unsafe { OwnedHandle::from_raw(raw) };
        Ok(Tensor {
            handle,
            shape: shape.to_vec(),
            dtype,
            device: device.clone(),
        })
    }

    /// Takes over a raw `fm_tensor` reference (from `fm_exec_run`).
    pub(crate) fn adopt(raw: usize, device: &Device) -> Result<Tensor> {
        // SAFETY: the caller hands over a new reference.
        let handle = unsafe { OwnedHandle::from_raw(raw) };
        let mut dims = [0i64; sys::FM_MAX_RANK as usize];
        let mut rank = 0;
        // SAFETY: out_dims has FM_MAX_RANK entries.
        check(unsafe { sys::fm_tensor_shape(dims.as_mut_ptr(), &mut rank, raw) })?;
        let mut tensor = Tensor {
            handle,
            shape: dims[..rank].iter().map(|&d| d as usize).collect(),
            dtype: DType::F32,
            device: device.clone(),
        };
        let buffer = tensor.buffer_raw()?;
        let mut dtype = 0;
        // SAFETY: valid out-pointer, live handle.
        check(unsafe { sys::fm_buffer_dtype(&mut dtype, buffer.raw()) })?;
        tensor.dtype = DType::from_sys(dtype)?;
        Ok(tensor)
    }

    fn buffer_raw(&self) -> Result<OwnedHandle> {
        let mut raw = 0;
        // SAFETY: valid out-pointer, live handle.
        check(unsafe { sys::fm_tensor_buffer(&mut raw, self.as_raw()) })?;
        // SAFETY: a new reference we now own.
        Ok(unsafe { OwnedHandle::from_raw(raw) })
    }

    /// The dims.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device holding the data.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Copies the data to the host. [`Error::DtypeMismatch`] if `T` is not the dtype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype {
            return Err(Error::DtypeMismatch(format!(
                "Tensor::to_vec: the tensor is {}, asked for {}",
                self.dtype,
                T::DTYPE
            )));
        }
        let mut out = vec![T::default(); self.len()];
        let buffer = self.buffer_raw()?;
        // SAFETY: `out` has room for len() elements of the tensor's dtype.
        check(unsafe {
            sys::fm_buffer_read(buffer.raw(), 0, out.as_mut_ptr().cast(), out.len(), 0)
        })?;
        Ok(out)
    }

    /// The single value of a one-element f32 tensor (a loss).
    pub fn scalar(&self) -> Result<f32> {
        let values = self.to_vec::<f32>()?;
        match values.as_slice() {
            [value] => Ok(*value),
            _ => Err(Error::ShapeMismatch(format!(
                "Tensor::scalar: the tensor has shape {:?}",
                self.shape
            ))),
        }
    }

    /// The raw `fm_tensor` handle, borrowed.
    pub fn as_raw(&self) -> usize {
        self.handle.raw()
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor<{}>{:?} on {}",
            self.dtype,
            self.shape,
            self.device.location()
        )
    }
}
