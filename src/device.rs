//! Devices: where buffers live and work runs.

use std::ffi::CStr;
use std::sync::Arc;

use crate::error::{check, Error, Result};
use crate::handle::OwnedHandle;
use crate::stream::Stream;
use crate::sys;

/// A kind of device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// The host CPU; always available.
    Cpu,
    /// NVIDIA GPUs (feature `cuda`).
    Cuda,
    /// Apple GPUs (feature `metal`).
    Metal,
}

impl Backend {
    fn to_sys(self) -> sys::fm_backend {
        match self {
            Backend::Cpu => sys::FM_BACKEND_CPU,
            Backend::Cuda => sys::FM_BACKEND_CUDA,
            Backend::Metal => sys::FM_BACKEND_METAL,
        }
    }

    fn from_sys(backend: sys::fm_backend) -> Result<Backend> {
        match backend {
            sys::FM_BACKEND_CPU => Ok(Backend::Cpu),
            sys::FM_BACKEND_CUDA => Ok(Backend::Cuda),
            sys::FM_BACKEND_METAL => Ok(Backend::Metal),
            other => Err(Error::Internal(format!("unknown backend {other}"))),
        }
    }

    /// "cpu", "cuda" or "metal".
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
            Backend::Metal => "metal",
        }
    }

    /// Whether this backend was compiled into the library.
    pub fn is_compiled(self) -> bool {
        let mut compiled = 0;
        // SAFETY: valid out-pointer and a known backend value.
        let status = unsafe { sys::fm_backend_is_compiled(&mut compiled, self.to_sys()) };
        status == sys::FM_OK && compiled == 1
    }

    /// Number of devices of this backend on this machine.
    /// [`Error::NotCompiledWith`] when the backend is not compiled in.
    pub fn device_count(self) -> Result<usize> {
        let mut count = 0;
        // SAFETY: valid out-pointer.
        check(unsafe { sys::fm_device_count(&mut count, self.to_sys()) })
            .map_err(|e| self.not_compiled(e))?;
        Ok(count)
    }

    fn not_compiled(self, error: Error) -> Error {
        match error {
            Error::NotCompiledWith { message, .. } => Error::NotCompiledWith {
                feature: self.as_str(),
                message,
            },
            other => other,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which device: a backend and an index. Cheap to copy; used in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Location {
    /// The host CPU.
    Cpu,
    /// CUDA device `i`.
    Cuda(usize),
    /// Metal device `i`.
    Metal(usize),
}

impl Location {
    /// The backend of this location.
    pub fn backend(self) -> Backend {
        match self {
            Location::Cpu => Backend::Cpu,
            Location::Cuda(_) => Backend::Cuda,
            Location::Metal(_) => Backend::Metal,
        }
    }

    /// The index among the backend's devices.
    pub fn index(self) -> usize {
        match self {
            Location::Cpu => 0,
            Location::Cuda(i) | Location::Metal(i) => i,
        }
    }

    fn new(backend: Backend, index: usize) -> Location {
        match backend {
            Backend::Cpu => Location::Cpu,
            Backend::Cuda => Location::Cuda(index),
            Backend::Metal => Location::Metal(index),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.backend(), self.index())
    }
}

/// Facts about a device and its current memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Which device.
    pub location: Location,
    /// Human-readable name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Total memory usable by the device, in bytes.
    pub total_memory: u64,
    /// Memory free on the device now, in bytes.
    pub free_memory: u64,
}

/// Statistics of a device's caching memory pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes held by live buffers (rounded up to the pool's block sizes).
    pub bytes_in_use: u64,
    /// Bytes held by the pool for reuse, not by any buffer.
    pub bytes_cached: u64,
    /// Highest `bytes_in_use` since the device opened or the last reset.
    pub peak_bytes_in_use: u64,
    /// Buffer allocations served.
    pub allocations: u64,
    /// Allocations that had to ask the system or driver (the rest came from the cache).
    pub system_allocations: u64,
}

/// An open device. Cloning is cheap and shares the device (and its pool).
///
/// Without feature `cuda`, [`Device::cuda`] returns
/// [`Error::NotCompiledWith`]`{ feature: "cuda", .. }`, so code needs no `cfg`.
#[derive(Clone)]
pub struct Device {
    handle: Arc<OwnedHandle>,
    location: Location,
}

// SAFETY: the C ABI documents device handles as usable from any number of
// threads at once (the core locks its pool and device registry).
unsafe impl Send for Device {}
// SAFETY: as above; no method takes `&mut self`.
unsafe impl Sync for Device {}

impl Device {
    /// Opens the device at `location`.
    pub fn open(location: Location) -> Result<Device> {
        let backend = location.backend();
        let mut raw = 0;
        // SAFETY: valid out-pointer; the backend value is known.
        check(unsafe { sys::fm_device_open(&mut raw, backend.to_sys(), location.index()) })
            .map_err(|e| backend.not_compiled(e))?;
        // SAFETY: fm_device_open returned a new reference that we now own.
        let handle = unsafe { OwnedHandle::from_raw(raw) };
        Ok(Device {
            handle: Arc::new(handle),
            location,
        })
    }

    /// The host CPU.
    pub fn cpu() -> Result<Device> {
        Device::open(Location::Cpu)
    }

    /// CUDA device `index`. [`Error::NotCompiledWith`] without feature `cuda`,
    /// [`Error::DeviceNotFound`] when there is no such GPU.
    pub fn cuda(index: usize) -> Result<Device> {
        Device::open(Location::Cuda(index))
    }

    /// Metal device `index`. [`Error::NotCompiledWith`] without feature `metal`.
    pub fn metal(index: usize) -> Result<Device> {
        Device::open(Location::Metal(index))
    }

    /// CUDA device `index` if there is one, else the CPU.
    pub fn cuda_if_available(index: usize) -> Result<Device> {
        match Device::cuda(index) {
            Err(Error::NotCompiledWith { .. } | Error::DeviceNotFound(_)) => Device::cpu(),
            other => other,
        }
    }

    /// The best device here: CUDA device 0, else Metal device 0, else the CPU.
    pub fn best() -> Result<Device> {
        let mut raw = 0;
        // SAFETY: valid out-pointer.
        check(unsafe { sys::fm_device_open_best(&mut raw) })?;
        // SAFETY: a new reference that we now own.
        unsafe { Device::from_raw(raw) }
    }

    /// Which device this is.
    pub fn location(&self) -> Location {
        self.location
    }

    /// Name and memory of the device.
    pub fn info(&self) -> Result<DeviceInfo> {
        let info = self.raw_info()?;
        // SAFETY: the library NUL-terminates `name` within its array.
        let name = unsafe { CStr::from_ptr(info.name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        Ok(DeviceInfo {
            location: self.location,
            name,
            total_memory: info.total_memory,
            free_memory: info.free_memory,
        })
    }

    fn raw_info(&self) -> Result<sys::fm_device_info> {
        // SAFETY: fm_device_info is plain data; all-zero is a valid value.
        let mut info: sys::fm_device_info = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointer and a live handle.
        check(unsafe { sys::fm_device_info_get(&mut info, self.as_raw()) })?;
        Ok(info)
    }

    /// Waits for all work queued on any stream of this device.
    pub fn synchronize(&self) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { sys::fm_device_synchronize(self.as_raw()) })
    }

    /// Statistics of this device's memory pool.
    pub fn pool_stats(&self) -> Result<PoolStats> {
        let mut stats = sys::fm_pool_stats {
            bytes_in_use: 0,
            bytes_cached: 0,
            peak_bytes_in_use: 0,
            allocations: 0,
            system_allocations: 0,
        };
        // SAFETY: valid out-pointer and a live handle.
        check(unsafe { sys::fm_device_pool_stats(&mut stats, self.as_raw()) })?;
        Ok(PoolStats {
            bytes_in_use: stats.bytes_in_use,
            bytes_cached: stats.bytes_cached,
            peak_bytes_in_use: stats.peak_bytes_in_use,
            allocations: stats.allocations,
            system_allocations: stats.system_allocations,
        })
    }

    /// Returns the pool's cached memory to the system.
    pub fn trim_pool(&self) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { sys::fm_device_pool_trim(self.as_raw()) })
    }

    /// Sets the pool's peak to the bytes in use now.
    pub fn reset_peak_memory(&self) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { sys::fm_device_pool_reset_peak(self.as_raw()) })
    }

    /// A new asynchronous work queue on this device.
    pub fn new_stream(&self) -> Result<Stream> {
        Stream::new(self)
    }

    /// The raw `fm_device` handle, borrowed: it stays owned by this value
    /// (and its clones) and is valid while any of them lives.
    pub fn as_raw(&self) -> usize {
        self.handle.raw()
    }

    /// Wraps a raw `fm_device`, taking over one reference of it.
    ///
    /// # Safety
    /// The caller must own one reference of `raw` and give it up; the
    /// returned `Device` releases it. An invalid handle gives an error.
    pub unsafe fn from_raw(raw: usize) -> Result<Device> {
        // SAFETY: the caller transfers its reference.
        let handle = unsafe { OwnedHandle::from_raw(raw) };
        let mut device = Device {
            handle: Arc::new(handle),
            location: Location::Cpu,
        };
        let info = device.raw_info()?;
        device.location = Location::new(Backend::from_sys(info.backend)?, info.index);
        Ok(device)
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Device) -> bool {
        self.location == other.location
    }
}

impl Eq for Device {}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.location)
    }
}
