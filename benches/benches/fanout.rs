//! Fan-out: one publish delivered to N local subscribers, hub only (no store, no sockets),
//! against `tokio::sync::broadcast` as the floor.
//!
//! Both sides do the same work per iteration: one send, then every subscriber receives one
//! message. Throughput is set to N elements, so criterion reports time per delivery.

use chat_benches::FanoutRig;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use std::sync::Arc;
use std::time::Duration;

fn fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("fanout");
    for &n in &[1usize, 100, 10_000, 100_000] {
        group.throughput(Throughput::Elements(n as u64));
        if n >= 10_000 {
            group.sample_size(20);
            group.measurement_time(Duration::from_secs(8));
        }

        let mut rig = rt.block_on(FanoutRig::new(n, 100));
        // Inside the runtime context: the hub may spawn (gap fills) from here.
        let _guard = rt.enter();
        group.bench_with_input(BenchmarkId::new("hub", n), &n, |b, &n| {
            b.iter(|| {
                let got = rig.publish_and_drain();
                assert_eq!(got, n);
            })
        });
        drop(rig);

        // The floor: one ring buffer shared by all receivers, a clone of an Arc per receive.
        let (tx, _) = tokio::sync::broadcast::channel::<Arc<String>>(1024);
        let mut rxs: Vec<_> = (0..n).map(|_| tx.subscribe()).collect();
        let body = Arc::new("x".repeat(100));
        group.bench_with_input(BenchmarkId::new("broadcast", n), &n, |b, &n| {
            b.iter(|| {
                tx.send(body.clone()).expect("receivers alive");
                let mut got = 0;
                for rx in rxs.iter_mut() {
                    if rx.try_recv().is_ok() {
                        got += 1;
                    }
                }
                assert_eq!(got, n);
            })
        });
    }
    group.finish();
}

// criterion_group! generates an undocumented public fn.
#[allow(missing_docs)]
mod harness {
    criterion::criterion_group!(benches, super::fanout);
}
use harness::benches;
criterion_main!(benches);
