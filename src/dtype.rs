//! Element types and the Rust types that carry them.

use crate::sys;

/// Element type of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
    /// 32-bit signed integer (labels, indices).
    I32,
    /// 8-bit signed integer.
    I8,
    /// 8-bit unsigned integer (raw image bytes).
    U8,
}

impl DType {
    pub(crate) fn to_sys(self) -> sys::fm_dtype {
        match self {
            DType::F32 => sys::FM_DTYPE_F32,
            DType::F16 => sys::FM_DTYPE_F16,
            DType::BF16 => sys::FM_DTYPE_BF16,
            DType::I32 => sys::FM_DTYPE_I32,
            DType::I8 => sys::FM_DTYPE_I8,
            DType::U8 => sys::FM_DTYPE_U8,
        }
    }

    pub(crate) fn from_sys(dtype: sys::fm_dtype) -> crate::Result<DType> {
        Ok(match dtype {
            sys::FM_DTYPE_F32 => DType::F32,
            sys::FM_DTYPE_F16 => DType::F16,
            sys::FM_DTYPE_BF16 => DType::BF16,
            sys::FM_DTYPE_I32 => DType::I32,
            sys::FM_DTYPE_I8 => DType::I8,
            sys::FM_DTYPE_U8 => DType::U8,
            other => return Err(crate::Error::Internal(format!("unknown dtype {other}"))),
        })
    }

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 | DType::U8 => 1,
        }
    }

    /// The name the native library uses ("f32", "bf16", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::I8 => "i8",
            DType::U8 => "u8",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust type whose memory layout is exactly one element of a [`DType`],
/// so slices of it can be copied to and from device buffers byte for byte.
pub trait Element: sealed::Sealed + Copy + Default + Send + Sync + 'static {
    /// The dtype this type stores.
    const DTYPE: DType;
    /// The value as f64 (exact for every element type).
    fn to_f64(self) -> f64;
}

macro_rules! element {
    ($rust:ty, $dtype:ident) => {
        impl sealed::Sealed for $rust {}
        impl Element for $rust {
            const DTYPE: DType = DType::$dtype;
            fn to_f64(self) -> f64 {
                f64::from(self)
            }
        }
    };
}

element!(f32, F32);
element!(half::f16, F16);
element!(half::bf16, BF16);
element!(i32, I32);
element!(i8, I8);
element!(u8, U8);
