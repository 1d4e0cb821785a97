//! Keeps a segment file that shrinks under the running bus from killing the process.
//!
//! Touching a page of a file mapping past the file's end raises SIGBUS, and the default action
//! ends the whole process: every reality, every connection. Someone truncating one segment file
//! (or a disk that returns an error for a page) must cost that one reality, not the bus. So
//! every segment mapping is registered here, and a SIGBUS handler that finds the faulting
//! address inside a registered mapping replaces the rest of that mapping with anonymous zero
//! pages (so the faulting access completes, and later ones never fault again) and records the
//! offset. Reads of zeros end the data; the log checks `Guard::faulted` after reads and flushes
//! and turns it into `StoreError::Unreadable` for that reality (STORAGE_FAILED on the wire).
//!
//! A SIGBUS outside every registered mapping goes to the handler that was there before (or,
//! when that was the default, ends the process as it always did).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

/// Mappings guarded at once. `vm.max_map_count` (65,530 by default) bounds mappings per
/// process anyway; past this many, new segments are mapped unguarded (logged once).
const SLOTS: usize = 16_384;

static USED: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];
static STARTS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static LENS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
/// First faulting offset plus one; 0 while the mapping never faulted.
static FAULTED: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static INSTALL: Once = Once::new();
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static FULL_WARNED: AtomicBool = AtomicBool::new(false);

/// A registered mapping; unregisters on drop (drop it before the mapping is unmapped).
pub struct Guard {
    slot: Option<usize>,
}

impl Guard {
    /// Registers `len` bytes at `start`.
    pub fn register(start: *const u8, len: usize) -> Self {
        install();
        if len == 0 {
            return Self { slot: None };
        }
        for i in 0..SLOTS {
            if USED[i]
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                FAULTED[i].store(0, Ordering::Relaxed);
                STARTS[i].store(start as usize, Ordering::Release);
                // The length goes last: the handler treats a slot with a length as complete.
                LENS[i].store(len, Ordering::Release);
                return Self { slot: Some(i) };
            }
        }
        if !FULL_WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                slots = SLOTS,
                "more segment mappings than the SIGBUS guard holds; new ones are unguarded"
            );
        }
        Self { slot: None }
    }

    /// The offset of the first access that faulted, if one did.
    pub fn faulted(&self) -> Option<usize> {
        let i = self.slot?;
        match FAULTED[i].load(Ordering::Acquire) {
            0 => None,
            at => Some(at - 1),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            LENS[i].store(0, Ordering::Release);
            STARTS[i].store(0, Ordering::Release);
            USED[i].store(false, Ordering::Release);
        }
    }
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Ordering::Relaxed);
        }
        // SAFETY: a zeroed sigaction is a valid value to fill in; the handler is an
        // `extern "C"` function with the SA_SIGINFO signature, and `previous` is written by
        // the kernel before it is read.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &action, &mut previous) != 0 {
                tracing::warn!(
                    error = %std::io::Error::last_os_error(),
                    "cannot install the SIGBUS guard; a segment truncated under the bus will end the process"
                );
                return;
            }
            let _ = PREVIOUS.set(previous);
        }
    });
}

/// The SIGBUS handler. Only async-signal-safe work: atomic loads and stores, and `mmap` (a
/// plain system call on Linux) over a range this process owns.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed);
    for i in 0..SLOTS {
        let len = LENS[i].load(Ordering::Acquire);
        if len == 0 {
            continue;
        }
        let start = STARTS[i].load(Ordering::Acquire);
        if addr < start || addr >= start + len {
            continue;
        }
        let from = addr & !(page - 1);
        let end = start + len;
        // SAFETY: [from, end) lies inside a mapping this process made and still holds (it is
        // registered); replacing it with private anonymous memory leaves every pointer into it
        // valid, and the owner unmaps the whole range when it drops the segment.
        let p = unsafe {
            libc::mmap(
                from as *mut libc::c_void,
                end - from,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            let _ = FAULTED[i].compare_exchange(
                0,
                addr - start + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
            return;
        }
        break;
    }
    // Not a segment (or it could not be patched): whatever handled SIGBUS before does.
    match PREVIOUS.get() {
        Some(prev)
            if prev.sa_sigaction != libc::SIG_DFL
                && prev.sa_sigaction != libc::SIG_IGN
                && prev.sa_flags & libc::SA_SIGINFO != 0 =>
        {
            // SAFETY: the previous handler was installed with SA_SIGINFO and takes these.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(prev.sa_sigaction) };
            f(sig, info, ctx);
        }
        Some(prev) if prev.sa_sigaction != libc::SIG_DFL && prev.sa_sigaction != libc::SIG_IGN => {
            // SAFETY: a handler installed without SA_SIGINFO takes the signal number only.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(prev.sa_sigaction) };
            f(sig);
        }
        _ => {
            // SAFETY: resetting to the default action; returning re-runs the faulting access,
            // which then ends the process as if no guard existed.
            unsafe {
                libc::signal(libc::SIGBUS, libc::SIG_DFL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_truncated_mapping_reads_zeros_and_reports_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = std::fs::File::options()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all(&vec![7u8; 64 << 10]).unwrap();
        // SAFETY: a test file nobody else maps.
        let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
        let guard = Guard::register(map.as_ptr(), map.len());
        assert_eq!(map[40 << 10], 7);
        f.set_len(8 << 10).unwrap();
        // Without the guard this read ends the test process with SIGBUS.
        assert_eq!(unsafe { std::ptr::read_volatile(&map[40 << 10]) }, 0);
        assert_eq!(guard.faulted(), Some(40 << 10));
        assert_eq!(map[100], 7, "pages before the fault keep the file's data");
        drop(guard);
        drop(map);
    }
}
