//! Typed buffers in device memory.

use std::marker::PhantomData;

use crate::device::Device;
use crate::dtype::Element;
use crate::error::{check, Error, Result};
use crate::handle::OwnedHandle;
use crate::stream::{PendingRead, Stream};
use crate::sys;

/// A contiguous array of `T` in a device's memory.
///
/// Reads take `&self`, writes `&mut self`, so safe code never writes one
/// buffer from two threads at once. Work queued on different streams is
/// ordered only by the caller (synchronize one before relying on it in the
/// other).
pub struct Buffer<T: Element> {
    handle: OwnedHandle,
    len: usize,
    device: Device,
    _element: PhantomData<T>,
}

// SAFETY: the C ABI allows buffer handles to be shared across threads; the
// only writes are through `&mut self`, so Rust's aliasing rules exclude
// concurrent writes to the same buffer.
unsafe impl<T: Element> Send for Buffer<T> {}
// SAFETY: as above; `&self` methods only read the buffer or its metadata.
unsafe impl<T: Element> Sync for Buffer<T> {}

impl<T: Element> Buffer<T> {
    /// A buffer of `len` zeros on `device`.
    pub fn zeros(device: &Device, len: usize) -> Result<Buffer<T>> {
        let mut buffer = Buffer::uninitialized(device, len)?;
        buffer.fill(T::default())?;
        Ok(buffer)
    }

    /// A buffer of `len` copies of `value` on `device`.
    pub fn full(device: &Device, len: usize, value: T) -> Result<Buffer<T>> {
        let mut buffer = Buffer::uninitialized(device, len)?;
        buffer.fill(value)?;
        Ok(buffer)
    }

    /// A buffer on `device` holding a copy of `data`.
    pub fn from_slice(device: &Device, data: &[T]) -> Result<Buffer<T>> {
        let mut buffer = Buffer::uninitialized(device, data.len())?;
        buffer.write(0, data)?;
        Ok(buffer)
    }

    /// Contents are written by every public constructor before they return.
    fn uninitialized(device: &Device, len: usize) -> Result<Buffer<T>> {
        let mut raw = 0;
        // SAFETY: valid out-pointer, live device handle.
        check(unsafe { sys::fm_buffer_new(&mut raw, device.as_raw(), T::DTYPE.to_sys(), len) })?;
        // SAFETY: fm_buffer_new returned a new reference that we now own.
        let handle = unsafe { OwnedHandle::from_raw(raw) };
        Ok(Buffer {
            handle,
            len,
            device: device.clone(),
            _element: PhantomData,
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device the buffer lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Copies the whole buffer to a new `Vec`.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let mut data = vec![T::default(); self.len];
        self.read(0, &mut data)?;
        Ok(data)
    }

    /// Copies `out.len()` elements starting at element `offset` into `out`.
    pub fn read(&self, offset: usize, out: &mut [T]) -> Result<()> {
        // SAFETY: `out` has room for out.len() elements of T's dtype, and a
        // synchronous read (stream 0) is complete when the call returns.
        check(unsafe {
            sys::fm_buffer_read(self.as_raw(), offset, out.as_mut_ptr().cast(), out.len(), 0)
        })
    }

    /// Copies `data` into the buffer starting at element `offset`.
    pub fn write(&mut self, offset: usize, data: &[T]) -> Result<()> {
        self.write_on(offset, data, 0)
    }

    /// Queues a write on `stream`. `data` may be reused at once: it is staged.
    pub fn write_async(&mut self, stream: &Stream, offset: usize, data: &[T]) -> Result<()> {
        self.write_on(offset, data, stream.as_raw())
    }

    fn write_on(&mut self, offset: usize, data: &[T], stream: usize) -> Result<()> {
        // SAFETY: `data` holds data.len() elements of T's dtype; the library
        // copies them (staging them when asynchronous) before returning.
        check(unsafe {
            sys::fm_buffer_write(
                self.as_raw(),
                offset,
                data.as_ptr().cast(),
                data.len(),
                stream,
            )
        })
    }

    /// Queues a read of `count` elements from `offset` on `stream`.
    pub fn read_async<'s>(
        &self,
        stream: &'s Stream,
        offset: usize,
        count: usize,
    ) -> Result<PendingRead<'s, T>> {
        PendingRead::queue(stream, self, offset, count)
    }

    /// Sets every element to `value`.
    pub fn fill(&mut self, value: T) -> Result<()> {
        self.fill_range(0, self.len, value)
    }

    /// Sets `count` elements from `offset` to `value`.
    pub fn fill_range(&mut self, offset: usize, count: usize, value: T) -> Result<()> {
        self.fill_on(offset, count, value, 0)
    }

    /// Queues a fill of the whole buffer on `stream`.
    pub fn fill_async(&mut self, stream: &Stream, value: T) -> Result<()> {
        self.fill_on(0, self.len, value, stream.as_raw())
    }

    fn fill_on(&mut self, offset: usize, count: usize, value: T, stream: usize) -> Result<()> {
        // SAFETY: live handle; the value is passed by value.
        check(unsafe { sys::fm_buffer_fill(self.as_raw(), offset, count, value.to_f64(), stream) })
    }

    /// Copies `count` elements of `source` from `source_offset` into this
    /// buffer at `offset`. The buffers may be on different devices.
    pub fn copy_from(
        &mut self,
        offset: usize,
        source: &Buffer<T>,
        source_offset: usize,
        count: usize,
    ) -> Result<()> {
        self.copy_on(offset, source, source_offset, count, 0)
    }

    /// Queues a same-device copy on `stream` (see [`Buffer::copy_from`]).
    pub fn copy_from_async(
        &mut self,
        stream: &Stream,
        offset: usize,
        source: &Buffer<T>,
        source_offset: usize,
        count: usize,
    ) -> Result<()> {
        self.copy_on(offset, source, source_offset, count, stream.as_raw())
    }

    fn copy_on(
        &mut self,
        offset: usize,
        source: &Buffer<T>,
        source_offset: usize,
        count: usize,
        stream: usize,
    ) -> Result<()> {
        // SAFETY: live handles; `&mut self` and `&Buffer` cannot alias.
        check(unsafe {
            sys::fm_buffer_copy(
                self.as_raw(),
                offset,
                source.as_raw(),
                source_offset,
                count,
                stream,
            )
        })
    }

    /// Copies `count` elements within the buffer, from `source_offset` to
    /// `offset`; overlapping ranges behave like `slice::copy_within`.
    pub fn copy_within(&mut self, source_offset: usize, offset: usize, count: usize) -> Result<()> {
        let raw = self.as_raw();
        // SAFETY: live handle; the library copies overlapping ranges safely.
        check(unsafe { sys::fm_buffer_copy(raw, offset, raw, source_offset, count, 0) })
    }

    /// A copy of this buffer on `device`.
    pub fn to_device(&self, device: &Device) -> Result<Buffer<T>> {
        let mut copy = Buffer::uninitialized(device, self.len)?;
        copy.copy_from(0, self, 0, self.len)?;
        Ok(copy)
    }

    /// The raw `fm_buffer` handle, borrowed (owned by this value).
    pub fn as_raw(&self) -> usize {
        self.handle.raw()
    }

    /// Gives up ownership of the raw handle (the caller must release it).
    pub fn into_raw(self) -> usize {
        self.handle.into_raw()
    }

    /// Wraps a raw `fm_buffer`, taking over one reference of it. Fails with
    /// [`Error::DtypeMismatch`] if its dtype is not `T`'s (the reference is
    /// then released).
    ///
    /// # Safety
    /// The caller must own one reference of `raw` and give it up.
    pub unsafe fn from_raw(raw: usize) -> Result<Buffer<T>> {
        // SAFETY: the caller transfers its reference.
        let handle = unsafe { OwnedHandle::from_raw(raw) };
        let (mut dtype, mut len, mut device) = (0, 0, 0);
        // SAFETY: valid out-pointers; invalid handles are reported.
        check(unsafe { sys::fm_buffer_dtype(&mut dtype, raw) })?;
        if dtype != T::DTYPE.to_sys() {
            return Err(Error::DtypeMismatch(format!(
                "Buffer::from_raw: the buffer's dtype is {dtype}, expected {}",
                T::DTYPE
            )));
        }
        // SAFETY: as above.
        check(unsafe { sys::fm_buffer_count(&mut len, raw) })?;
        // SAFETY: as above; fm_buffer_device returns a new reference.
        check(unsafe { sys::fm_buffer_device(&mut device, raw) })?;
        // SAFETY: that new reference is ours to give to Device.
        let device = unsafe { Device::from_raw(device) }?;
        Ok(Buffer {
            handle,
            len,
            device,
            _element: PhantomData,
        })
    }
}

impl<T: Element> std::fmt::Debug for Buffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Buffer<{}>[{}] on {}",
            T::DTYPE,
            self.len,
            self.device.location()
        )
    }
}
