//! The shared connection policies: slow consumers, connection caps, idle peers.

use crate::common::*;
use chat_core::protocol::{ClientFrame, HelloAuth, ServerFrame};
use chat_core::{ErrorCode, Limits};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use transport_tcp::{SignInGate, TcpConfig};

#[tokio::test]
async fn a_binary_client_that_never_reads_is_cut_off_and_everyone_else_gets_everything() {
    let limits = Limits {
        allow_guests: true,
        session_queue: 16,
        requests_per_second: 100_000.0,
        request_burst: 100_000.0,
        ..Limits::default()
    };
    let mut config = TcpConfig::default();
    config.close_timeout = Duration::from_millis(300);
    // Small kernel send buffers on the server's sockets (inherited from the listener) and a
    // small receive window on the stalled client, so that a stalled reader shows up after
    // kilobytes, not megabytes.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(8 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener: TcpListener = socket.listen(128).unwrap();
    let h = Harness::start_on(listener, config, limits).await;

    let (_, ta) = h.user("alice").await;
    let (_, tc) = h.user("carol").await;
    let mut alice = h.binary(&ta).await;
    let room = alice.create_room("busy").await;
    let mut carol = h.binary(&tc).await;
    carol.subscribe(room).await;
    let mut dave = h.line("dave").await;
    dave.send("/join busy").await;
    dave.expect("* joined busy; you are now talking in busy")
        .await;
    let mut stalled = BinClient::connect_small_window(h.addr).await;
    stalled.hello(HelloAuth::Guest("stalled".into())).await;
    stalled.subscribe(room).await;
    // From here on, `stalled` is never read until the end of the test.

    // Carol and Dave read everything, concurrently, until the last message, "done".
    let carol_task = tokio::spawn(async move {
        let mut count = 0u64;
        loop {
            match carol.message().await.1.as_str() {
                "done" => break count,
                _ => count += 1,
            }
        }
    });
    let dave_task = tokio::spawn(async move {
        let mut count = 0u64;
        loop {
            let line = dave.expect_prefix("[busy] alice: ").await;
            if line == "[busy] alice: done" {
                break count;
            }
            assert_eq!(line, format!("[busy] alice: {}", "z".repeat(1024)));
            count += 1;
        }
    });

    // Publish until the server has cut the stalled client off (bounded).
    let body = "z".repeat(1024);
    let mut published = 0u64;
    while h.server.stats().closed_slow_consumer == 0 {
        assert!(published < 5_000, "the stalled client was never cut off");
        published = alice.say(room, &body).await;
    }
    // The server keeps serving: more messages, and a newcomer.
    for _ in 0..20 {
        published = alice.say(room, &body).await;
    }
    let mut newcomer = BinClient::connect(h.addr).await;
    newcomer.hello(HelloAuth::Guest("newcomer".into())).await;
    assert_eq!(newcomer.ok(ClientFrame::Ping).await, ServerFrame::Pong);

    alice.say(room, "done").await;
    let got = tokio::time::timeout(PATIENCE, carol_task)
        .await
        .expect("carol received everything")
        .unwrap();
    assert_eq!(got, published);
    let lines = tokio::time::timeout(PATIENCE, dave_task)
        .await
        .expect("dave received everything")
        .unwrap();
    assert_eq!(lines, published);

    // The stalled client, reading at last, finds a prefix of the messages, then the end.
    let frames = stalled.until_closed().await;
    let got = frames
        .iter()
        .filter(|r| matches!(r.frame, ServerFrame::Message(_)))
        .count() as u64;
    assert!(got < published, "the stalled client got everything?");
    assert_eq!(h.server.stats().closed_slow_consumer, 1);
}

#[tokio::test]
async fn over_the_caps_a_connection_is_told_why_in_its_own_mode() {
    let mut config = TcpConfig::default();
    config.max_connections = 3;
    config.max_connections_per_ip = 2;
    let h = Harness::start_with(config, guest_limits()).await;
    let mut a = BinClient::connect(h.addr).await;
    a.hello(HelloAuth::Guest("a".into())).await;
    let mut b = h.line("b").await;

    // A third from the same address: "too many connections", as a frame …
    let mut c = BinClient::connect(h.addr).await;
    c.send(Some(1), hello(HelloAuth::Guest("c".into()))).await;
    let (id, code, message) = c.closed_with_error().await;
    assert_eq!((id, code), (None, ErrorCode::LimitReached));
    assert_eq!(
        message,
        "too_many_connections: too many connections from your address"
    );
    // … or as a line.
    let mut d = LineClient::connect(h.addr).await;
    d.send("").await;
    assert_eq!(
        d.until_closed().await,
        ["! too many connections from your address"]
    );

    // The global cap: connect from another loopback address so the per-address cap is not
    // what refuses. 127.0.0.2 is loopback on Linux; skip where it is not.
    let other = TcpSocket::new_v4().unwrap();
    if other.bind("127.0.0.2:0".parse().unwrap()).is_ok() {
        let tcp = other.connect(h.addr).await.unwrap();
        let mut third = BinClient::over(tcp);
        third.hello(HelloAuth::Guest("third".into())).await;
        let other = TcpSocket::new_v4().unwrap();
        other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut full = LineClient::over(other.connect(h.addr).await.unwrap());
        full.send("/nick late").await;
        assert_eq!(
            full.until_closed().await,
            ["! server full, try again later"]
        );
        assert_eq!(h.server.stats().refused_full, 1);
    }
    assert_eq!(h.server.stats().refused_per_ip, 2);

    // Those inside are unaffected, and a freed slot is usable again.
    assert_eq!(a.ok(ClientFrame::Ping).await, ServerFrame::Pong);
    b.send("/rooms").await;
    b.expect_prefix("* you are in no rooms yet").await;
    drop(a);
    h.until("the slot is freed", |h| {
        h.server.limiter().open_from("127.0.0.1".parse().unwrap()) == 1
    })
    .await;
    let mut e = BinClient::connect(h.addr).await;
    let w = e.hello(HelloAuth::Guest("e".into())).await;
    assert!(matches!(w.frame, ServerFrame::Welcome { .. }), "{w:?}");
}

#[tokio::test]
async fn an_idle_binary_client_is_closed_and_one_that_pings_is_kept() {
    let mut config = TcpConfig::default();
    config.keepalive_interval = Duration::from_millis(100);
    config.idle_timeout = Duration::from_millis(400);
    let h = Harness::start_with(config, guest_limits()).await;

    let mut live = BinClient::connect(h.addr).await;
    live.hello(HelloAuth::Guest("live".into())).await;
    let mut idle = BinClient::connect(h.addr).await;
    idle.hello(HelloAuth::Guest("idle".into())).await;

    // The live one pings more often than the timeout, all along; the idle one sees keepalive
    // pongs (no id), then the idle error, then the end.
    let keep_alive = async {
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert_eq!(live.ok(ClientFrame::Ping).await, ServerFrame::Pong);
        }
    };
    let ((), frames) = tokio::join!(keep_alive, idle.until_closed());
    let keepalives = frames
        .iter()
        .filter(|r| r.id.is_none() && r.frame == ServerFrame::Pong)
        .count();
    assert!(keepalives >= 2, "{frames:?}");
    match &frames.last().unwrap().frame {
        ServerFrame::Error { code, message } => {
            assert_eq!(*code, ErrorCode::Internal);
            assert!(message.starts_with("idle_timeout: "), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.server.stats().closed_idle, 1);
    assert_eq!(live.ok(ClientFrame::Ping).await, ServerFrame::Pong);
}

#[tokio::test]
async fn an_idle_line_client_is_told_and_closed() {
    let mut config = TcpConfig::default();
    config.line_idle_timeout = Duration::from_millis(300);
    let h = Harness::start_with(config, guest_limits()).await;
    let mut c = h.line("sleepy").await;
    assert_eq!(
        c.until_closed().await,
        ["! disconnected: idle for too long"]
    );
    assert_eq!(h.server.stats().closed_idle, 1);
}

/// A [`SignInGate`] that admits `budget` attempts, then refuses every one; it records who
/// asked.
struct Budget {
    left: AtomicU32,
    asked: Mutex<Vec<IpAddr>>,
}

impl Budget {
    fn new(budget: u32) -> Arc<Budget> {
        Arc::new(Budget {
            left: AtomicU32::new(budget),
            asked: Mutex::new(Vec::new()),
        })
    }

    fn asked(&self) -> Vec<IpAddr> {
        self.asked.lock().unwrap().clone()
    }
}

impl SignInGate for Budget {
    fn admit(&self, peer: IpAddr) -> bool {
        self.asked.lock().unwrap().push(peer);
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

const REFUSED: &str = "too many sign-in attempts from your address; try again later";

/// A server (guests allowed) behind `gate`, with the password account `erin`.
async fn gated_with_erin(gate: &Arc<Budget>) -> Harness {
    let mut config = TcpConfig::default();
    config.sign_in_gate = Some(gate.clone());
    let h = Harness::start_with(config, guest_limits()).await;
    h.engine
        .accounts()
        .register("erin", "correct horse battery")
        .await
        .unwrap();
    h
}

fn loopback(n: usize) -> Vec<IpAddr> {
    vec![IpAddr::from([127, 0, 0, 1]); n]
}

#[tokio::test]
async fn line_mode_sign_ins_spend_the_gate_budget_across_connections() {
    let gate = Budget::new(2);
    let h = gated_with_erin(&gate).await;

    // One attempt, and a line that is not one (`/help` asks nothing of the gate).
    let mut first = LineClient::connect(h.addr).await;
    first.send("/login erin wrong").await;
    first.expect("! invalid username or password").await;
    first.send("/help").await;
    first.expect_prefix("*   anything else").await;
    assert_eq!(gate.asked(), loopback(1));
    // A new connection does not start a new budget: a guest name is the second attempt …
    let mut guest = h.line("visitor").await;
    // … and the budget is spent: the right password is refused without being tried.
    let mut c = LineClient::connect(h.addr).await;
    c.send("/login erin correct horse battery").await;
    let lines = c.until_closed().await;
    assert_eq!(
        lines.last().map(String::as_str),
        Some(&*format!("! {REFUSED}"))
    );
    assert!(!lines.iter().any(|l| l.contains("signed in")), "{lines:?}");
    // So is a guest name, on the connection that still had attempts of its own.
    first.send("/nick ghost").await;
    assert_eq!(first.until_closed().await, [format!("! {REFUSED}")]);

    assert_eq!(gate.asked(), loopback(4));
    let stats = h.server.stats();
    assert_eq!((stats.auth_gated, stats.auth_failed), (2, 0));
    assert_eq!(stats.line_sessions, 1);
    guest.send("/rooms").await;
    guest.expect_prefix("* you are in no rooms yet").await;
}

#[tokio::test]
async fn a_binary_hello_with_credentials_is_refused_once_the_gate_budget_is_spent() {
    let gate = Budget::new(1);
    let h = gated_with_erin(&gate).await;
    let login = |password: &str| {
        hello(HelloAuth::Login {
            username: "erin".into(),
            password: password.into(),
        })
    };

    let mut c = BinClient::connect(h.addr).await;
    c.send(Some(1), login("wrong")).await;
    let (id, code, _) = c.closed_with_error().await;
    assert_eq!((id, code), (Some(1), ErrorCode::InvalidCredentials));
    // The budget is spent: the right password is refused without being tried, and so is a
    // guest name, each with the hello's id, then the close.
    for auth in [
        login("correct horse battery"),
        hello(HelloAuth::Guest("g".into())),
    ] {
        let mut c = BinClient::connect(h.addr).await;
        c.send(Some(7), auth).await;
        let refused = c.closed_with_error().await;
        assert_eq!(
            refused,
            (Some(7), ErrorCode::RateLimited, REFUSED.to_string())
        );
    }
    assert_eq!(gate.asked(), loopback(3));
    // A token is not a guessable credential: the gate is not asked.
    let (_, token) = h.user("frank").await;
    let mut b = h.binary(&token).await;
    assert_eq!(b.ok(ClientFrame::Ping).await, ServerFrame::Pong);
    assert_eq!(gate.asked(), loopback(3));

    let stats = h.server.stats();
    assert_eq!((stats.auth_gated, stats.auth_failed), (2, 1));
    assert_eq!(stats.binary_sessions, 1);
}
