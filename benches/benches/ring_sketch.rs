//! A sketch, not the engine: what a room-level ring read by per-session cursors would cost
//! per delivery, next to the same `tokio::sync::broadcast` floor as the `fanout` bench.
//!
//! When it was written the hub gave every session a queue of its own, and the `fanout` bench
//! measured it at about 2.6–3× the floor with 10 000 subscribers (docs/BENCHMARKS.md). This
//! bench measured the alternative before it was built (the hub uses it since 2026-12-02),
//! with the parts a real session would need added one at a time, all in one run:
//!
//! - `ring`: one shared ring of recent entries under a `RwLock`; each receiver keeps its own
//!   cursor and clones the entry's `Arc` (what broadcast does, without its per-slot counters);
//! - `ring+park`: the publisher also reads, per subscriber, whether that session's writer is
//!   parked (in a server nearly every writer is, and must be woken), from the session's own
//!   heap allocation;
//! - `ring+park+queue`: each receiver also checks its session's own queue (replies, presence)
//!   before taking ring entries, as the ordering promises require, through a flag in the
//!   session's allocation;
//! - `ring+park+bitmap`: the same check through one bit per session in a dense shared bitmap
//!   instead, which stays in cache where 10 000 separate allocations do not.
//!
//! Sessions are separate allocations with others between them, as in a server. Nothing here
//! is used by the engine; it exists so that the design decision rests on a measurement anyone
//! can repeat: `cargo bench -p chat-benches --bench ring_sketch`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// What a publisher or a writer would touch of a session, in its own cache line(s).
#[repr(C, align(64))]
struct SessionSketch {
    parked: AtomicBool,
    queued: AtomicU64,
    /// The rest of a session's state, so that the struct spans what a real one does.
    _rest: [u64; 8],
}

/// The room's ring of released entries: `(seq, frame)`, oldest first.
type Ring = RwLock<VecDeque<(u64, Arc<String>)>>;

struct Receiver {
    /// The next seq this receiver takes.
    next: u64,
    ring: Arc<Ring>,
    session: Arc<SessionSketch>,
    /// This session's bit in the dense bitmap.
    slot: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Ring,
    Park,
    ParkQueue,
    ParkBitmap,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Ring => "ring",
            Variant::Park => "ring+park",
            Variant::ParkQueue => "ring+park+queue",
            Variant::ParkBitmap => "ring+park+bitmap",
        }
    }
}

const RING: usize = 1024;

fn ring_sketch(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_sketch");
    for &n in &[100usize, 10_000, 100_000] {
        group.throughput(Throughput::Elements(n as u64));
        if n >= 10_000 {
            group.sample_size(20);
            group.measurement_time(Duration::from_secs(6));
        }
        let ring: Arc<Ring> = Arc::new(RwLock::new(VecDeque::with_capacity(RING)));
        let mut spacers = Vec::with_capacity(2 * n);
        let mut sessions = Vec::with_capacity(n);
        let mut receivers = Vec::with_capacity(n);
        for slot in 0..n {
            spacers.push(Box::new([0u8; 200]));
            let s = Arc::new(SessionSketch {
                parked: AtomicBool::new(false),
                queued: AtomicU64::new(0),
                _rest: [0; 8],
            });
            spacers.push(Box::new([0u8; 200]));
            sessions.push(s.clone());
            receivers.push(Receiver {
                next: 1,
                ring: ring.clone(),
                session: s,
                slot,
            });
        }
        let bitmap: Vec<AtomicU64> = (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        let body = Arc::new("x".repeat(100));
        let mut seq = 0u64;
        for variant in [
            Variant::Ring,
            Variant::Park,
            Variant::ParkQueue,
            Variant::ParkBitmap,
        ] {
            group.bench_with_input(BenchmarkId::new(variant.name(), n), &n, |b, &n| {
                b.iter(|| {
                    seq += 1;
                    {
                        let mut w = ring.write().unwrap_or_else(|p| p.into_inner());
                        if w.len() == RING {
                            w.pop_front();
                        }
                        w.push_back((seq, body.clone()));
                    }
                    let mut to_wake = 0usize;
                    if variant != Variant::Ring {
                        for s in &sessions {
                            if s.parked.load(Ordering::Acquire) {
                                to_wake += 1;
                            }
                        }
                    }
                    let mut got = 0usize;
                    for rx in receivers.iter_mut() {
                        let queued = match variant {
                            Variant::ParkQueue => rx.session.queued.load(Ordering::Acquire) != 0,
                            Variant::ParkBitmap => {
                                bitmap[rx.slot / 64].load(Ordering::Acquire) & (1 << (rx.slot % 64))
                                    != 0
                            }
                            _ => false,
                        };
                        let taken = {
                            let r = rx.ring.read().unwrap_or_else(|p| p.into_inner());
                            let first = r.front().map_or(0, |e| e.0);
                            r.get((rx.next - first) as usize)
                                .map(|(s, f)| (*s, f.clone()))
                        };
                        if let Some((s, frame)) = taken {
                            if s == rx.next && frame.len() == 100 && !queued {
                                rx.next += 1;
                                got += 1;
                            }
                        }
                    }
                    assert_eq!((got, to_wake), (n, 0));
                })
            });
        }
        drop(spacers);

        let (tx, _) = tokio::sync::broadcast::channel::<Arc<String>>(RING);
        let mut rxs: Vec<_> = (0..n).map(|_| tx.subscribe()).collect();
        group.bench_with_input(BenchmarkId::new("broadcast", n), &n, |b, &n| {
            b.iter(|| {
                tx.send(body.clone()).expect("receivers alive");
                let got = rxs
                    .iter_mut()
                    .map(|rx| rx.try_recv().is_ok())
                    .filter(|ok| *ok)
                    .count();
                assert_eq!(got, n);
            })
        });
    }
    group.finish();
}

// criterion_group! generates an undocumented public fn.
#[allow(missing_docs)]
mod harness {
    criterion::criterion_group!(benches, super::ring_sketch);
}
use harness::benches;
criterion_main!(benches);
