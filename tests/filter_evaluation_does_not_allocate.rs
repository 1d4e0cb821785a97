//! Evaluating a compiled filter over a pulse — the envelope walk included, packed or scattered
//! eigenvalues — allocates nothing: counted by a global allocator that tallies this thread's
//! allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use arqonbus::filter::{Filter, FilterLimits, LazyView};
use arqonbus::proto::v1::{ArqonMessage, SpectralMetadata};
use prost::Message;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(|n| n.get())
}

#[test]
fn filter_evaluation_does_not_allocate() {
    let limits = FilterLimits {
        max_bytes: 1024,
        max_nodes: 128,
        max_depth: 16,
    };
    let packed = ArqonMessage {
        topic: "lab.rig.spectra".into(),
        producer_id: "omega-7".into(),
        spectral: Some(SpectralMetadata {
            coherence: 0.95,
            criticality: 0.05,
            eigenvalues: vec![2.0, 1.0, 0.5],
        }),
        ..Default::default()
    }
    .encode_to_vec();
    // The same values, with the eigenvalues spread over two spectral occurrences.
    let mut scattered = packed.clone();
    scattered.extend_from_slice(&[7 << 3 | 2, 9, 3 << 3 | 1]);
    scattered.extend_from_slice(&4.0f64.to_le_bytes());
    let filters: Vec<Filter> = [
        "coherence >= 0.9 && criticality < 0.1",
        "eigenvalues[3] > 1.5 || len(eigenvalues) >= 9",
        "!(producer != \"omega-7\") && topic == \"lab.rig.spectra\"",
    ]
    .iter()
    .map(|t| Filter::compile(t, &limits).unwrap())
    .collect();
    let mut admitted = 0;
    let before = allocations();
    for bytes in [&packed, &scattered] {
        for _ in 0..1000 {
            let mut view = LazyView::new(bytes);
            for f in &filters {
                admitted += u64::from(f.admits(&mut view));
            }
        }
    }
    let after = allocations();
    assert_eq!(after - before, 0, "evaluation allocated");
    // The filters did run: the first and third admit both pulses, the second only the
    // scattered one (which has a fourth eigenvalue).
    assert_eq!(admitted, 2000 + 1000 + 2000);
}
