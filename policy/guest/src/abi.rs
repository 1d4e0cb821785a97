//! The guest side of the ABI (`docs/policy-abi.md`). Use it through [`crate::arqon_policy!`].
//!
//! Per inspection the host calls `arqon_alloc(len)`, writes the encoded `PolicyInput` at the
//! address it returns, then calls `arqon_inspect(ptr, len)`. The answer is an `i64`: the decision
//! in the high 32 bits ([`DECISION_ALLOW`] or [`DECISION_DENY`]) and the reason code in the low
//! 32 bits (zero for allow). After a deny the host may call `arqon_reason()`, which returns the
//! reason text as `(ptr << 32) | len`.

use core::cell::UnsafeCell;

use crate::{PolicyInput, Reason, Verdict};

pub const DECISION_ALLOW: i64 = 1;
pub const DECISION_DENY: i64 = 2;
/// The reason code of the denial a guest gives when it cannot decode its own input.
pub const REASON_UNDECODABLE_INPUT: u32 = u32::MAX;

/// Guest state. A Wasm instance runs one call at a time on one thread, so plain cells suffice.
pub(crate) struct GuestCell<T>(pub(crate) UnsafeCell<T>);

// SAFETY: wasm32-unknown-unknown modules are single-threaded: the host never calls into one
// instance from two threads, nor re-enters it.
unsafe impl<T> Sync for GuestCell<T> {}

/// The input region: (address, capacity in bytes).
static INPUT: GuestCell<(usize, usize)> = GuestCell(UnsafeCell::new((0, 0)));
/// The reason text of the last denial.
static REASON: GuestCell<Reason> = GuestCell(UnsafeCell::new(Reason::new()));

const PAGE_BYTES: usize = 65536;

/// `arqon_alloc`: room for `size` bytes of input, or 0 when memory cannot grow. The region is
/// reused by every inspection, so memory only grows to the largest input seen.
pub fn alloc(size: u32) -> u32 {
    let size = size as usize;
    // SAFETY: single-threaded and not re-entered (see `GuestCell`).
    let input = unsafe { &mut *INPUT.0.get() };
    if size > input.1 || input.0 == 0 {
        let pages = size.div_ceil(PAGE_BYTES).max(1);
        match grow(pages) {
            Some(addr) => *input = (addr, pages * PAGE_BYTES),
            None => return 0,
        }
    }
    input.0 as u32
}

#[cfg(target_arch = "wasm32")]
fn grow(pages: usize) -> Option<usize> {
    let old = core::arch::wasm32::memory_grow(0, pages);
    (old != usize::MAX).then_some(old * PAGE_BYTES)
}

#[cfg(not(target_arch = "wasm32"))]
fn grow(_pages: usize) -> Option<usize> {
    None
}

/// `arqon_inspect`: decodes the input at `ptr..ptr + len` and runs `policy` on it.
///
/// # Safety
///
/// `ptr..ptr + len` must be readable memory holding the input; the host guarantees this by
/// writing into the region `arqon_alloc` returned.
pub unsafe fn inspect(ptr: u32, len: u32, policy: fn(&PolicyInput<'_>) -> Verdict) -> i64 {
    // SAFETY: the caller's contract above.
    let bytes = unsafe { core::slice::from_raw_parts(ptr as usize as *const u8, len as usize) };
    let verdict = match PolicyInput::decode(bytes) {
        Ok(input) => policy(&input),
        Err(_) => Verdict::deny(
            REASON_UNDECODABLE_INPUT,
            "the policy could not decode its PolicyInput",
        ),
    };
    // SAFETY: single-threaded and not re-entered (see `GuestCell`).
    let stored = unsafe { &mut *REASON.0.get() };
    match verdict {
        Verdict::Allow => {
            *stored = Reason::new();
            DECISION_ALLOW << 32
        }
        Verdict::Deny { code, reason } => {
            *stored = reason;
            (DECISION_DENY << 32) | i64::from(code)
        }
    }
}

/// `arqon_reason`: the last denial's reason text as `(ptr << 32) | len`.
pub fn reason() -> i64 {
    // SAFETY: single-threaded and not re-entered (see `GuestCell`).
    let stored = unsafe { &*REASON.0.get() };
    let bytes = stored.as_bytes();
    ((bytes.as_ptr() as usize as i64) << 32) | bytes.len() as i64
}

/// Exports a policy function as a module that speaks the guest ABI.
///
/// `arqon_policy!(inspect)` where `inspect: fn(&PolicyInput) -> Verdict`.
#[macro_export]
macro_rules! arqon_policy {
    ($inspect:path) => {
        #[no_mangle]
        pub extern "C" fn arqon_alloc(size: u32) -> u32 {
            $crate::abi::alloc(size)
        }

        #[no_mangle]
        pub extern "C" fn arqon_inspect(ptr: u32, len: u32) -> i64 {
            // SAFETY: the host writes the input into the region `arqon_alloc` returned.
            unsafe { $crate::abi::inspect(ptr, len, $inspect) }
        }

        #[no_mangle]
        pub extern "C" fn arqon_reason() -> i64 {
            $crate::abi::reason()
        }
    };
}
