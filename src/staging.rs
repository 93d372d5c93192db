//! Host memory that a device copies from directly.

use std::marker::PhantomData;

use crate::device::Device;
use crate::dtype::Element;
use crate::error::{check, Result};
use crate::handle::OwnedHandle;
use crate::sys;

/// Host memory for data on its way to a device: page-locked (pinned) on
/// CUDA, so [`Tensor::from_staging`](crate::Tensor::from_staging) moves it
/// in one DMA without the extra copy [`Tensor::from_slice`](crate::Tensor::from_slice)
/// makes; ordinary 64-byte-aligned host memory on the CPU. The data loader
/// collates batches straight into these.
///
/// ```
/// # fn main() -> ferrometal::Result<()> {
/// use ferrometal::{Device, Staging, Tensor};
/// let device = Device::cpu()?;
/// let mut staging = Staging::<f32>::new(&device, 6)?;
/// staging.as_mut_slice().copy_from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
/// let t = Tensor::from_staging(&device, &[2, 3], &staging)?;
/// assert_eq!(t.to_vec::<f32>()?, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
/// # Ok(())
/// # }
/// ```
pub struct Staging<T: Element> {
    handle: OwnedHandle,
    ptr: *mut T,
    len: usize,
    device: Device,
    _element: PhantomData<T>,
}

// SAFETY: the memory is owned by the handle, which may be used from any
// thread; writes need `&mut self`, so Rust's aliasing rules hold.
unsafe impl<T: Element> Send for Staging<T> {}
// SAFETY: as above; `&self` only reads.
unsafe impl<T: Element> Sync for Staging<T> {}

impl<T: Element> Staging<T> {
    /// Room for `len` elements, zeroed, for `device`.
    pub fn new(device: &Device, len: usize) -> Result<Staging<T>> {
        let bytes = len.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| {
            crate::Error::InvalidArgument(format!("Staging::new: {len} elements overflow"))
        })?;
        let mut raw = 0;
        // SAFETY: valid out-pointer, live device handle.
        check(unsafe { sys::fm_staging_new(&mut raw, device.as_raw(), bytes) })?;
        // SAFETY: a new reference we now own.
        let handle = unsafe { OwnedHandle::from_raw(raw) };
        let (mut ptr, mut size) = (std::ptr::null_mut(), 0);
        // SAFETY: valid out-pointers, live handle.
        check(unsafe { sys::fm_staging_data(&mut ptr, &mut size, handle.raw()) })?;
        let mut staging = Staging {
            handle,
            ptr: ptr.cast(),
            len,
            device: device.clone(),
            _element: PhantomData,
        };
        staging.as_mut_slice().fill(T::default());
        Ok(staging)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device it is for.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the library returned at least len * size_of::<T>() bytes,
        // aligned to 64 (every Element's alignment divides it), initialised
        // in new(), alive as long as the handle.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The elements, to fill.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in as_slice; `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// The raw `fm_staging` handle (still owned by `self`).
    pub fn as_raw(&self) -> usize {
        self.handle.raw()
    }
}

impl<T: Element> std::fmt::Debug for Staging<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging")
            .field("dtype", &T::DTYPE)
            .field("len", &self.len)
            .field("device", &self.device.location())
            .finish()
    }
}
