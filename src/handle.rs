//! One owned reference to a native handle, released on drop.

use crate::error::{check, Result};
use crate::sys;

/// Owns exactly one reference of a live native handle.
#[derive(PartialEq, Eq, Hash)]
pub(crate) struct OwnedHandle(usize);

impl OwnedHandle {
    /// Takes ownership of one reference the native library handed out.
    ///
    /// # Safety
    /// `raw` must be a live handle whose reference the caller owns and gives up.
    pub(crate) unsafe fn from_raw(raw: usize) -> OwnedHandle {
        OwnedHandle(raw)
    }

    pub(crate) fn raw(&self) -> usize {
        self.0
    }

    /// Gives the reference up without releasing it.
    pub(crate) fn into_raw(self) -> usize {
        let raw = self.0;
        std::mem::forget(self);
        raw
    }

    /// Releases the reference, reporting failure (Drop cannot).
    pub(crate) fn close(self) -> Result<()> {
        let raw = self.into_raw();
        // SAFETY: fm_release accepts any value and reports invalid ones.
        check(unsafe { sys::fm_release(raw) })
    }
}

impl Drop for OwnedHandle {
    fn drop(&mut self) {
        // SAFETY: as in close; a failure here would mean a double release,
        // which ownership rules out, and there is no one to report it to.
        unsafe { sys::fm_release(self.0) };
    }
}

impl std::fmt::Debug for OwnedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
