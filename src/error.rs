//! The crate's error type: one variant per class of `fm_status`, each
//! carrying the native message (which names the function and argument).

use std::ffi::CStr;

use crate::sys;

/// Everything that can go wrong in ferrometal.
///
/// The message of each variant is the native library's, copied when the
/// error happened, e.g. `fm_buffer_read: argument 'count': src offset 8 +
/// count 4 exceeds the buffer of 10 elements`.
#[derive(thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    // Misuse of the API.
    /// A handle was zero, released, forged, or of the wrong kind.
    #[error("invalid handle: {0}")]
    InvalidHandle(String),
    /// An argument was invalid (NULL, unknown enum, overflow, unrepresentable value).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An offset and count reach past the end of a buffer.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// Element types disagree.
    #[error("dtype mismatch: {0}")]
    DtypeMismatch(String),
    /// Shapes do not fit together.
    #[error("shape mismatch: {0}")]
    ShapeMismatch(String),

    // The machine.
    /// The device has no memory left for the request.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// No device with that backend and index exists here.
    #[error("device not found: {0}")]
    DeviceNotFound(String),
    /// The backend was not compiled in; enable the named cargo feature.
    #[error("not compiled with feature `{feature}`: {message}")]
    NotCompiledWith {
        /// The cargo feature that would enable it (`"cuda"`, `"metal"`).
        feature: &'static str,
        /// The native message.
        message: String,
    },
    /// The backend does not support the operation.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The device driver or runtime failed.
    #[error("backend failure: {0}")]
    Backend(String),

    // Data and numerics.
    /// Reading or writing a file failed, or a file was malformed.
    #[error("I/O: {0}")]
    Io(String),
    /// A computation produced NaN or Inf.
    #[error("numerical error: {0}")]
    Numerical(String),

    /// A bug in ferrometal; please report it with this message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The `fm_status` this error corresponds to.
    pub fn status(&self) -> sys::fm_status {
        match self {
            Error::InvalidHandle(_) => sys::FM_ERR_INVALID_HANDLE,
            Error::InvalidArgument(_) => sys::FM_ERR_INVALID_ARGUMENT,
            Error::OutOfRange(_) => sys::FM_ERR_OUT_OF_RANGE,
            Error::DtypeMismatch(_) => sys::FM_ERR_DTYPE_MISMATCH,
            Error::ShapeMismatch(_) => sys::FM_ERR_SHAPE_MISMATCH,
            Error::OutOfMemory(_) => sys::FM_ERR_OUT_OF_MEMORY,
            Error::DeviceNotFound(_) => sys::FM_ERR_DEVICE_NOT_FOUND,
            Error::NotCompiledWith { .. } => sys::FM_ERR_NOT_COMPILED,
            Error::Unsupported(_) => sys::FM_ERR_UNSUPPORTED,
            Error::Backend(_) => sys::FM_ERR_BACKEND,
            Error::Io(_) => sys::FM_ERR_IO,
            Error::Numerical(_) => sys::FM_ERR_NUMERICAL,
            Error::Internal(_) => sys::FM_ERR_INTERNAL,
        }
    }

    /// The native message, without the variant's prefix.
    pub fn message(&self) -> &str {
        match self {
            Error::InvalidHandle(m)
            | Error::InvalidArgument(m)
            | Error::OutOfRange(m)
            | Error::DtypeMismatch(m)
            | Error::ShapeMismatch(m)
            | Error::OutOfMemory(m)
            | Error::DeviceNotFound(m)
            | Error::Unsupported(m)
            | Error::Backend(m)
            | Error::Io(m)
            | Error::Numerical(m)
            | Error::Internal(m) => m,
            Error::NotCompiledWith { message, .. } => message,
        }
    }

    #[cold]
    fn from_status(status: sys::fm_status) -> Error {
        // SAFETY: fm_last_error returns a NUL-terminated thread-local string
        // that stays valid until the next ferrometal call on this thread; it
        // is copied before any other call.
        let message = unsafe { CStr::from_ptr(sys::fm_last_error()) }
            .to_string_lossy()
            .into_owned();
        match status {
            sys::FM_ERR_INVALID_HANDLE => Error::InvalidHandle(message),
            sys::FM_ERR_INVALID_ARGUMENT => Error::InvalidArgument(message),
            sys::FM_ERR_OUT_OF_RANGE => Error::OutOfRange(message),
            sys::FM_ERR_DTYPE_MISMATCH => Error::DtypeMismatch(message),
            sys::FM_ERR_SHAPE_MISMATCH => Error::ShapeMismatch(message),
            sys::FM_ERR_OUT_OF_MEMORY => Error::OutOfMemory(message),
            sys::FM_ERR_DEVICE_NOT_FOUND => Error::DeviceNotFound(message),
            sys::FM_ERR_NOT_COMPILED => Error::NotCompiledWith {
                feature: if message.contains("'metal'") {
                    "metal"
                } else {
                    "cuda"
                },
                message,
            },
            sys::FM_ERR_UNSUPPORTED => Error::Unsupported(message),
            sys::FM_ERR_BACKEND => Error::Backend(message),
            sys::FM_ERR_IO => Error::Io(message),
            sys::FM_ERR_NUMERICAL => Error::Numerical(message),
            sys::FM_ERR_INTERNAL => Error::Internal(message),
            other => Error::Internal(format!("unknown status {other}: {message}")),
        }
    }
}

/// Turns a native status into a `Result`. Every FFI call goes through it.
#[inline]
pub(crate) fn check(status: sys::fm_status) -> Result<()> {
    if status == sys::FM_OK {
        Ok(())
    } else {
        Err(Error::from_status(status))
    }
}
