//! The session pump of `chat_core::conn`, driven over in-memory halves (no sockets): batching,
//! codec choice, shutdown draining, stalled writers, idle peers. Time is paused where a
//! deadline is under test.

use bytes::Bytes;
use chat_core::conn::{
    CodecChoice, FrameReader, FrameWriter, Inbound, PumpConfig, PumpEnd, ShutdownSignal, pump,
};
use chat_core::protocol::{ClientFrame, Response, ServerFrame};
use chat_core::{CloseReason, Codec, Engine, Identity, Outbox, Request, Session, Timestamp};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Feed(Codec, ServerFrame),
    Flush,
    Probe,
}

/// Yields what the test sends; the peer "closes" when the sender is dropped.
struct ChanReader(mpsc::UnboundedReceiver<Inbound>);

impl FrameReader for ChanReader {
    type Error = String;
    async fn read(&mut self) -> Result<Option<Inbound>, String> {
        Ok(self.0.recv().await)
    }
}

/// Records every operation; with `stalled`, flushes never complete (a peer not reading).
struct LogWriter {
    ops: mpsc::UnboundedSender<Op>,
    stalled: bool,
}

impl FrameWriter for LogWriter {
    type Error = String;
    fn feed(
        &mut self,
        codec: Codec,
        bytes: Bytes,
    ) -> impl Future<Output = Result<(), String>> + Send {
        let frame = codec.decode_response(&bytes).map(|r: Response| r.frame);
        let _ = self.ops.send(Op::Feed(codec, frame.unwrap()));
        async { Ok(()) }
    }
    fn flush(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        let stalled = self.stalled;
        let _ = self.ops.send(Op::Flush);
        async move {
            if stalled {
                std::future::pending::<()>().await;
            }
            Ok(())
        }
    }
    fn probe(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        let _ = self.ops.send(Op::Probe);
        async { Ok(()) }
    }
}

struct Rig {
    engine: Engine,
    session: Session,
    outbox: Outbox,
    inbound: mpsc::UnboundedSender<Inbound>,
    reader: ChanReader,
    writer: LogWriter,
    ops: mpsc::UnboundedReceiver<Op>,
}

async fn rig(stalled: bool) -> Rig {
    let engine = Engine::new(Arc::new(chat_store::MemoryStore::new()));
    let user = engine
        .store()
        .create_user("alice", None, false, Timestamp::now())
        .await
        .unwrap();
    let (session, outbox) = engine.open_session(Identity::of(&user));
    let (inbound, rx) = mpsc::unbounded_channel();
    let (ops_tx, ops) = mpsc::unbounded_channel();
    Rig {
        engine,
        session,
        outbox,
        inbound,
        reader: ChanReader(rx),
        writer: LogWriter {
            ops: ops_tx,
            stalled,
        },
        ops,
    }
}

fn drain(ops: &mut mpsc::UnboundedReceiver<Op>) -> Vec<Op> {
    let mut out = Vec::new();
    while let Ok(op) = ops.try_recv() {
        out.push(op);
    }
    out
}

fn notice(n: usize) -> ServerFrame {
    ServerFrame::Notice {
        room: None,
        body: n.to_string(),
    }
}

#[tokio::test]
async fn queued_frames_are_written_in_batches_with_one_flush_each() {
    let Rig {
        session,
        outbox,
        inbound,
        mut reader,
        mut writer,
        mut ops,
        ..
    } = rig(false).await;
    for n in 0..5 {
        session.push(None, notice(n));
    }
    let config = PumpConfig {
        max_batch: 2,
        ..PumpConfig::default()
    };
    let shutdown = ShutdownSignal::new();
    let run = pump(
        session,
        outbox,
        &mut reader,
        &mut writer,
        CodecChoice::Fixed(Codec::Json),
        &config,
        &shutdown,
    );
    let closer = async {
        // Wait for the fifth frame's flush, then let the peer close.
        let mut seen = Vec::new();
        while seen.iter().filter(|o| **o == Op::Flush).count() < 3 {
            seen.push(ops.recv().await.unwrap());
        }
        drop(inbound);
        seen
    };
    let (end, seen) = tokio::join!(run, closer);
    assert!(matches!(end, PumpEnd::PeerClosed), "{end:?}");
    let f = |n| Op::Feed(Codec::Json, notice(n));
    assert_eq!(
        seen,
        [
            f(0),
            f(1),
            Op::Flush,
            f(2),
            f(3),
            Op::Flush,
            f(4),
            Op::Flush
        ]
    );
}

#[tokio::test]
async fn requests_are_handled_and_the_first_frame_picks_the_codec() {
    let Rig {
        session,
        outbox,
        inbound,
        mut reader,
        mut writer,
        mut ops,
        ..
    } = rig(false).await;
    let ping = Codec::Postcard.encode_request(&Request {
        id: Some(7),
        frame: ClientFrame::Ping,
    });
    inbound
        .send(Inbound::Frame {
            codec: Codec::Postcard,
            bytes: ping,
        })
        .unwrap();
    let config = PumpConfig::default();
    let shutdown = ShutdownSignal::new();
    let run = pump(
        session,
        outbox,
        &mut reader,
        &mut writer,
        CodecChoice::FirstFrame {
            until_then: Codec::Json,
        },
        &config,
        &shutdown,
    );
    let closer = async {
        let first = ops.recv().await.unwrap();
        drop(inbound);
        first
    };
    let (end, first) = tokio::join!(run, closer);
    assert!(matches!(end, PumpEnd::PeerClosed));
    assert_eq!(first, Op::Feed(Codec::Postcard, ServerFrame::Pong));
}

#[tokio::test]
async fn shutdown_drains_the_queue_before_ending() {
    let Rig {
        session,
        outbox,
        inbound: _inbound,
        mut reader,
        mut writer,
        mut ops,
        ..
    } = rig(false).await;
    for n in 0..100 {
        session.push(None, notice(n));
    }
    let shutdown = ShutdownSignal::new();
    shutdown.trigger();
    let end = pump(
        session,
        outbox,
        &mut reader,
        &mut writer,
        CodecChoice::Fixed(Codec::Json),
        &PumpConfig::default(),
        &shutdown,
    )
    .await;
    assert!(
        matches!(end, PumpEnd::Closed(CloseReason::Shutdown)),
        "{end:?}"
    );
    let fed: Vec<_> = drain(&mut ops)
        .into_iter()
        .filter_map(|o| match o {
            Op::Feed(_, f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(fed, (0..100).map(notice).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_write_that_never_completes_closes_the_session_as_a_slow_consumer() {
    let Rig {
        engine,
        session,
        outbox,
        inbound: _inbound,
        mut reader,
        mut writer,
        ..
    } = rig(true).await;
    session.push(None, notice(1));
    let config = PumpConfig {
        write_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(3600),
        probe_interval: Duration::from_secs(3600),
        ..PumpConfig::default()
    };
    let started = tokio::time::Instant::now();
    let end = pump(
        session,
        outbox,
        &mut reader,
        &mut writer,
        CodecChoice::Fixed(Codec::Json),
        &config,
        &ShutdownSignal::new(),
    )
    .await;
    assert!(
        matches!(end, PumpEnd::Closed(CloseReason::SlowConsumer)),
        "{end:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(engine.stats().sessions, 0, "the session is gone");
}

#[tokio::test(start_paused = true)]
async fn the_engine_closing_a_session_interrupts_a_blocked_write() {
    let Rig {
        engine,
        session,
        outbox,
        inbound: _inbound,
        mut reader,
        mut writer,
        ..
    } = rig(true).await;
    let user = session.identity().user;
    session.push(None, notice(1));
    let config = PumpConfig {
        write_timeout: Duration::from_secs(3600),
        ..PumpConfig::default()
    };
    let shutdown = ShutdownSignal::new();
    let run = pump(
        session,
        outbox,
        &mut reader,
        &mut writer,
        CodecChoice::Fixed(Codec::Json),
        &config,
        &shutdown,
    );
    let (end, _) = tokio::join!(run, engine.close_user_sessions(user));
    assert!(
        matches!(end, PumpEnd::Closed(CloseReason::Revoked)),
        "{end:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_probed_and_then_reaped() {
    let Rig {
        session,
        outbox,
        inbound: _inbound,
        mut reader,
        mut writer,
        mut ops,
        ..
    } = rig(false).await;
    let config = PumpConfig {
        probe_interval: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(25),
        ..PumpConfig::default()
    };
    let started = tokio::time::Instant::now();
    let end = pump(
        session,
        outbox,
        &mut reader,
        &mut writer,
        CodecChoice::Fixed(Codec::Json),
        &config,
        &ShutdownSignal::new(),
    )
    .await;
    assert!(matches!(end, PumpEnd::IdleTimeout), "{end:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(25));
    assert_eq!(
        drain(&mut ops),
        [Op::Probe, Op::Flush, Op::Probe, Op::Flush]
    );
}

#[tokio::test(start_paused = true)]
async fn signs_of_life_keep_a_quiet_peer_open() {
    let Rig {
        session,
        outbox,
        inbound,
        mut reader,
        mut writer,
        ..
    } = rig(false).await;
    let config = PumpConfig {
        probe_interval: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(25),
        ..PumpConfig::default()
    };
    let shutdown = ShutdownSignal::new();
    let run = pump(
        session,
        outbox,
        &mut reader,
        &mut writer,
        CodecChoice::Fixed(Codec::Json),
        &config,
        &shutdown,
    );
    let peer = async {
        // A pong every 20 s for two minutes: never 25 s of silence.
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            inbound.send(Inbound::Alive).unwrap();
        }
        shutdown.trigger();
    };
    let (end, ()) = tokio::join!(run, peer);
    assert!(
        matches!(end, PumpEnd::Closed(CloseReason::Shutdown)),
        "{end:?}"
    );
}

/// Probes follow the peer's silence: a peer that keeps talking is never probed, even while
/// the server writes to it all the time; once it goes quiet it is probed after each probe
/// interval of silence, and reaped after the idle timeout counted from its last sign of life.
#[tokio::test(start_paused = true)]
async fn probes_follow_the_peers_silence_not_the_servers_writes() {
    let Rig {
        engine,
        session,
        outbox,
        inbound,
        mut reader,
        mut writer,
        mut ops,
    } = rig(false).await;
    let config = PumpConfig {
        probe_interval: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(25),
        ..PumpConfig::default()
    };
    let started = tokio::time::Instant::now();
    let alice = session.identity().user;
    let shutdown = ShutdownSignal::new();
    let run = pump(
        session,
        outbox,
        &mut reader,
        &mut writer,
        CodecChoice::Fixed(Codec::Json),
        &config,
        &shutdown,
    );
    let peer = async {
        // For a minute: a frame written to the peer every second, a pong from it every 5 s.
        for i in 0..60 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(engine.notify_user(alice, None, i.to_string()).await, 1);
            if i % 5 == 4 {
                inbound.send(Inbound::Alive).unwrap();
            }
        }
        // Then silence; the channel stays open.
        inbound
    };
    let (end, _inbound) = tokio::join!(run, peer);
    assert!(matches!(end, PumpEnd::IdleTimeout), "{end:?}");
    // The last pong came at 60 s: probes at 70 and 80 s, reaped at 85 s.
    assert_eq!(started.elapsed(), Duration::from_secs(85));
    let ops = drain(&mut ops);
    let probes = ops.iter().filter(|o| **o == Op::Probe).count();
    assert_eq!(probes, 2, "{ops:?}");
    assert_eq!(
        ops.iter().filter(|o| matches!(o, Op::Feed(..))).count(),
        60,
        "every frame was written"
    );
    let last_feed = ops.iter().rposition(|o| matches!(o, Op::Feed(..))).unwrap();
    let first_probe = ops.iter().position(|o| *o == Op::Probe).unwrap();
    assert!(
        first_probe > last_feed,
        "no probe while the peer was talking: {ops:?}"
    );
}

/// A zero probe interval means no probes (not a busy loop): the peer is only reaped.
#[tokio::test(start_paused = true)]
async fn a_zero_probe_interval_sends_no_probes() {
    let Rig {
        session,
        outbox,
        inbound: _inbound,
        mut reader,
        mut writer,
        mut ops,
        ..
    } = rig(false).await;
    let config = PumpConfig {
        probe_interval: Duration::ZERO,
        idle_timeout: Duration::from_secs(25),
        ..PumpConfig::default()
    };
    let started = tokio::time::Instant::now();
    let end = pump(
        session,
        outbox,
        &mut reader,
        &mut writer,
        CodecChoice::Fixed(Codec::Json),
        &config,
        &ShutdownSignal::new(),
    )
    .await;
    assert!(matches!(end, PumpEnd::IdleTimeout), "{end:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(25));
    assert_eq!(drain(&mut ops), []);
}

/// With a flush interval, a frame on a quiet connection goes out at once; frames that come
/// within the interval after a flush wait for its end and go out together, in one flush.
#[tokio::test(start_paused = true)]
async fn a_flush_interval_coalesces_frames_but_not_the_first_after_a_quiet_spell() {
    let Rig {
        engine,
        session,
        outbox,
        inbound,
        mut reader,
        mut writer,
        mut ops,
    } = rig(false).await;
    let alice = session.identity().user;
    let interval = Duration::from_millis(10);
    let config = PumpConfig {
        flush_interval: interval,
        ..PumpConfig::default()
    };
    let shutdown = ShutdownSignal::new();
    let run = pump(
        session,
        outbox,
        &mut reader,
        &mut writer,
        CodecChoice::Fixed(Codec::Json),
        &config,
        &shutdown,
    );
    let note = |n: usize| Op::Feed(Codec::Json, notice(n));
    let script = async {
        // A frame on a quiet connection: written and flushed without waiting.
        let t0 = tokio::time::Instant::now();
        engine.notify_user(alice, None, "0").await;
        assert_eq!(ops.recv().await, Some(note(0)));
        assert_eq!(ops.recv().await, Some(Op::Flush));
        assert_eq!(
            tokio::time::Instant::now(),
            t0,
            "no wait for the first frame"
        );

        // Two more right after the flush: held until the interval has passed, then one flush.
        engine.notify_user(alice, None, "1").await;
        engine.notify_user(alice, None, "2").await;
        assert_eq!(ops.recv().await, Some(note(1)));
        assert_eq!(ops.recv().await, Some(note(2)));
        assert_eq!(ops.recv().await, Some(Op::Flush));
        assert_eq!(
            tokio::time::Instant::now(),
            t0 + interval,
            "held for the interval"
        );

        // After a quiet spell longer than the interval, at once again.
        tokio::time::sleep(interval * 5).await;
        let t1 = tokio::time::Instant::now();
        engine.notify_user(alice, None, "3").await;
        assert_eq!(ops.recv().await, Some(note(3)));
        assert_eq!(ops.recv().await, Some(Op::Flush));
        assert_eq!(tokio::time::Instant::now(), t1);
        drop(inbound);
    };
    let (end, ()) = tokio::join!(run, script);
    assert!(matches!(end, PumpEnd::PeerClosed), "{end:?}");
}

/// A session closed while its frames are held by the flush interval writes none of them: the
/// close still wins over queued frames (the pump's reader half sees the close and ends the
/// connection, dropping the writer mid-hold).
#[tokio::test(start_paused = true)]
async fn frames_held_by_the_flush_interval_are_not_written_after_a_close() {
    let Rig {
        engine,
        session,
        outbox,
        inbound: _inbound,
        mut reader,
        mut writer,
        mut ops,
    } = rig(false).await;
    let alice = session.identity().user;
    let config = PumpConfig {
        flush_interval: Duration::from_millis(10),
        ..PumpConfig::default()
    };
    let shutdown = ShutdownSignal::new();
    let run = pump(
        session,
        outbox,
        &mut reader,
        &mut writer,
        CodecChoice::Fixed(Codec::Json),
        &config,
        &shutdown,
    );
    let script = async {
        engine.notify_user(alice, None, "0").await;
        assert_eq!(ops.recv().await, Some(Op::Feed(Codec::Json, notice(0))));
        assert_eq!(ops.recv().await, Some(Op::Flush));
        // Held by the interval, then the session is closed before it ends.
        engine.notify_user(alice, None, "1").await;
        assert_eq!(engine.close_user_sessions(alice).await, 1);
    };
    let (end, ()) = tokio::join!(run, script);
    assert!(
        matches!(end, PumpEnd::Closed(CloseReason::Revoked)),
        "{end:?}"
    );
    let after: Vec<Op> = drain(&mut ops);
    assert!(
        after.is_empty(),
        "nothing written after the close: {after:?}"
    );
}
