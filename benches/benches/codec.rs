//! Codec: decoding a delivered message, and a client's `send`, in each wire codec.
//!
//! Every delivery is decoded once by its client (chat-client, the load tool), and every
//! request once by the server, so these costs are per delivery and per request. Encoding is
//! once per message whatever the fan-out (see `Outgoing`), and not measured here.

use chat_core::protocol::{ClientFrame, Codec, Entry, Outgoing, Request, ServerFrame};
use chat_core::{RoomId, Seq, Timestamp, UserId};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use std::hint::black_box;

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    // What a fan-out delivers: a 100-byte body, as in the load scenarios.
    let message = Outgoing::event(ServerFrame::Message(Entry {
        room: RoomId(17),
        seq: Seq(123_456),
        at: Timestamp(1_764_590_000_000),
        sender: Some(UserId(42)),
        sender_name: "someone".into(),
        body: "x".repeat(100),
        client_msg_id: Some("0193a5b2c3d4-7f3e9a1b-0001".into()),
    }));
    let send = Request {
        id: Some(9),
        frame: ClientFrame::Send {
            room: RoomId(17),
            body: "x".repeat(100),
            client_msg_id: Some("0193a5b2c3d4-7f3e9a1b-0001".into()),
        },
    };
    for codec in [Codec::Json, Codec::Postcard] {
        let name = format!("{codec:?}").to_lowercase();
        let bytes = message.encoded(codec);
        group.bench_with_input(BenchmarkId::new("message", &name), &bytes, |b, bytes| {
            b.iter(|| codec.decode_response(black_box(bytes)).expect("decodes"))
        });
        let bytes = codec.encode_request(&send);
        group.bench_with_input(
            BenchmarkId::new("send_request", &name),
            &bytes,
            |b, bytes| b.iter(|| codec.decode_request(black_box(bytes)).expect("decodes")),
        );
    }
    group.finish();
}

// criterion_group! generates an undocumented public fn.
#[allow(missing_docs)]
mod harness {
    criterion::criterion_group!(benches, super::codec);
}
use harness::benches;
criterion_main!(benches);
