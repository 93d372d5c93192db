//! Streams: ordered queues of asynchronous work on one device.

use crate::buffer::Buffer;
use crate::device::Device;
use crate::dtype::Element;
use crate::error::{check, Result};
use crate::handle::OwnedHandle;
use crate::sys;

/// An ordered queue of asynchronous work on one device. Work submitted to a
/// stream (`Buffer::write_async` and friends) runs in order; errors it meets
/// are returned by [`Stream::synchronize`]. On the CPU, work completes before
/// the submitting call returns.
pub struct Stream {
    handle: OwnedHandle,
    device: Device,
}

// SAFETY: the C ABI allows a stream to be used by one thread at a time, from
// any thread; `Stream` is therefore Send but deliberately not Sync.
unsafe impl Send for Stream {}

impl Stream {
    pub(crate) fn new(device: &Device) -> Result<Stream> {
        let mut raw = 0;
        // SAFETY: valid out-pointer and a live device handle.
        check(unsafe { sys::fm_stream_new(&mut raw, device.as_raw()) })?;
        // SAFETY: fm_stream_new returned a new reference that we now own.
        let handle = unsafe { OwnedHandle::from_raw(raw) };
        Ok(Stream {
            handle,
            device: device.clone(),
        })
    }

    /// Waits until all work queued on this stream is done, and returns the
    /// first error it met.
    pub fn synchronize(&self) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { sys::fm_stream_synchronize(self.as_raw()) })
    }

    /// The device this stream runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The raw `fm_stream` handle, borrowed (owned by this value).
    pub fn as_raw(&self) -> usize {
        self.handle.raw()
    }

    /// Waits for the stream's work, then releases it, reporting any error
    /// (dropping a stream also waits, but cannot report).
    pub fn close(self) -> Result<()> {
        let synchronized = self.synchronize();
        self.handle.close()?;
        synchronized
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stream({}, {:?})", self.device.location(), self.handle)
    }
}

/// A read queued on a stream; [`PendingRead::wait`] gives the data.
///
/// The destination is owned here, so it stays valid however long the device
/// takes, even if this value is leaked. Dropping it waits for the stream.
#[must_use = "the data arrives only through wait()"]
pub struct PendingRead<'s, T: Element> {
    stream: &'s Stream,
    data: Option<Vec<T>>,
}

impl<'s, T: Element> PendingRead<'s, T> {
    pub(crate) fn queue(
        stream: &'s Stream,
        source: &Buffer<T>,
        offset: usize,
        count: usize,
    ) -> Result<Self> {
        let mut data = vec![T::default(); count];
        // SAFETY: `data` has room for `count` elements of T's dtype and is
        // kept alive (and unmoved: a Vec's heap block does not move) until
        // the stream is synchronized in wait() or drop.
        check(unsafe {
            sys::fm_buffer_read(
                source.as_raw(),
                offset,
                data.as_mut_ptr().cast(),
                count,
                stream.as_raw(),
            )
        })?;
        Ok(PendingRead {
            stream,
            data: Some(data),
        })
    }

    /// Waits for the stream and returns the data read.
    pub fn wait(mut self) -> Result<Vec<T>> {
        self.stream.synchronize()?;
        Ok(self.data.take().unwrap_or_default())
    }
}

impl<T: Element> Drop for PendingRead<'_, T> {
    fn drop(&mut self) {
        if self.data.is_some() && self.stream.synchronize().is_err() {
            // The device may still hold the address: leak rather than free it.
            std::mem::forget(self.data.take());
        }
    }
}
