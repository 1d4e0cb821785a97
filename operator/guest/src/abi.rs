//! The guest side of the operator ABI (`docs/operator-abi.md`). Use it through
//! [`crate::arqon_operator!`].
//!
//! Per input the host calls `arqon_alloc(len)`, writes the encoded `OperatorInput` at the address
//! it returns, then calls `arqon_operate(ptr, len)`, which answers 0 (done) or another value
//! (failed: the input's outputs are dropped). During the call the guest may call the host's
//! imports from module `arqon`: `emit`, `param_f64`, `param_text`.

use core::cell::UnsafeCell;

use crate::encode::{Sink, Writer};
use crate::{EmitTooLarge, Input};

/// Largest encoded pulse the guest can emit at once (the host's caps may be lower).
pub const EMIT_BUFFER_BYTES: usize = 64 << 10;

/// The failure code a guest answers when it cannot decode its own input.
pub const UNDECODABLE_INPUT: i32 = -1;

struct GuestCell<T>(UnsafeCell<T>);

// SAFETY: wasm32-unknown-unknown modules are single-threaded: the host never calls into one
// instance from two threads, nor re-enters it.
unsafe impl<T> Sync for GuestCell<T> {}

static EMIT_BUFFER: GuestCell<[u8; EMIT_BUFFER_BYTES]> =
    GuestCell(UnsafeCell::new([0; EMIT_BUFFER_BYTES]));

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "arqon")]
extern "C" {
    #[link_name = "emit"]
    fn host_emit(ptr: *const u8, len: u32) -> i32;
    #[link_name = "param_f64"]
    fn host_param_f64(name: *const u8, name_len: u32, out: *mut f64) -> i32;
    #[link_name = "param_text"]
    fn host_param_text(name: *const u8, name_len: u32, out: *mut u8, cap: u32) -> i32;
}

/// `arqon_alloc`: the input region (CASIL's allocator: one region, grown to the largest input).
pub fn alloc(size: u32) -> u32 {
    arqonbus_policy_guest::abi::alloc(size)
}

/// `arqon_operate`: decodes the input at `ptr..ptr + len` and runs `operate` on it.
///
/// # Safety
///
/// `ptr..ptr + len` must be readable memory holding the input; the host guarantees this by
/// writing into the region `arqon_alloc` returned.
pub unsafe fn operate(ptr: u32, len: u32, operate: fn(&Input<'_>) -> Result<(), u32>) -> i32 {
    // SAFETY: the caller's contract above.
    let bytes = unsafe { core::slice::from_raw_parts(ptr as usize as *const u8, len as usize) };
    match Input::decode(bytes) {
        Ok(input) => match operate(&input) {
            Ok(()) => 0,
            Err(code) => (code as i32).max(1),
        },
        Err(_) => UNDECODABLE_INPUT,
    }
}

/// Encodes a pulse into the emit buffer with `write` and hands it to the host.
pub fn emit_encoded(write: impl FnOnce(&mut dyn Sink)) -> Result<(), EmitTooLarge> {
    // SAFETY: single-threaded and not re-entered (see `GuestCell`); the buffer is used only
    // within this call.
    let buf = unsafe { &mut *EMIT_BUFFER.0.get() };
    let mut w = Writer::new(buf);
    write(&mut w);
    let len = w.len().ok_or(EmitTooLarge)?;
    send(&buf[..len]);
    Ok(())
}

#[cfg(target_arch = "wasm32")]
fn send(encoded: &[u8]) {
    // SAFETY: the host reads `len` bytes at `ptr` from this instance's memory. A refusal (a cap)
    // does not return: the host ends the call.
    unsafe {
        host_emit(encoded.as_ptr(), encoded.len() as u32);
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn send(_encoded: &[u8]) {}

#[cfg(target_arch = "wasm32")]
pub fn param_f64(name: &str) -> Option<f64> {
    let mut out = 0f64;
    // SAFETY: the host reads the name from and writes 8 bytes to this instance's memory.
    let found = unsafe { host_param_f64(name.as_ptr(), name.len() as u32, &mut out) };
    (found == 1).then_some(out)
}

#[cfg(not(target_arch = "wasm32"))]
pub fn param_f64(_name: &str) -> Option<f64> {
    None
}

/// The text parameter's full length (it may be longer than `buf`), or `None`.
#[cfg(target_arch = "wasm32")]
pub fn param_text(name: &str, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: the host reads the name and writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        host_param_text(
            name.as_ptr(),
            name.len() as u32,
            buf.as_mut_ptr(),
            buf.len() as u32,
        )
    };
    usize::try_from(n).ok()
}

#[cfg(not(target_arch = "wasm32"))]
pub fn param_text(_name: &str, _buf: &mut [u8]) -> Option<usize> {
    None
}

/// Exports an operator function as a module that speaks the guest ABI.
///
/// `arqon_operator!(operate)` where `operate: fn(&Input) -> Result<(), u32>`.
#[macro_export]
macro_rules! arqon_operator {
    ($operate:path) => {
        #[no_mangle]
        pub extern "C" fn arqon_alloc(size: u32) -> u32 {
            $crate::abi::alloc(size)
        }

        #[no_mangle]
        pub extern "C" fn arqon_operate(ptr: u32, len: u32) -> i32 {
            // SAFETY: the host writes the input into the region `arqon_alloc` returned.
            unsafe { $crate::abi::operate(ptr, len, $operate) }
        }
    };
}
