//! The retained-reality log: appending a 1 KiB record into a memory-mapped segment (the copy
//! and the CRC; flushing is separate, group-committed, off the reactor) and scanning records
//! back (what recovery and history reads do per record).

use arqonbus::store::{Segment, Slot, SEGMENT_HEADER_BYTES};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const BODY: usize = 1024;
const RECORDS: u64 = 10_000;
const SEGMENT_BYTES: usize = 16 << 20;

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let body = vec![7u8; BODY];
    let mut g = c.benchmark_group("segment");
    g.throughput(Throughput::Elements(RECORDS));
    let mut base = 1u64;
    g.bench_function("append_10k_1KiB", |b| {
        b.iter_batched(
            || {
                // A fresh, preallocated segment per batch (creation is not measured).
                let s = Segment::create(dir.path(), base, SEGMENT_BYTES).unwrap();
                base += RECORDS;
                s
            },
            |mut s| {
                for i in 0..RECORDS {
                    s.append(s.base + i, i, black_box(&body));
                }
                let path = s.path.clone();
                drop(s);
                std::fs::remove_file(path).unwrap();
            },
            BatchSize::PerIteration,
        )
    });

    let mut full = Segment::create(dir.path(), 1 << 40, SEGMENT_BYTES).unwrap();
    for i in 0..RECORDS {
        full.append(full.base + i, i, &body);
    }
    g.bench_function("scan_10k_1KiB", |b| {
        b.iter(|| {
            let mut pos = SEGMENT_HEADER_BYTES;
            let mut n = 0u64;
            while let Slot::Record(r) = full.slot(pos) {
                n += r.body.len() as u64;
                pos = r.next;
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
