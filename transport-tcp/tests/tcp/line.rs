//! Line mode: bad lines, terminal safety, and pacing under the rate limit.

use crate::common::*;
use chat_core::{Author, Limits};
use tokio::io::AsyncWriteExt;
use transport_tcp::TcpConfig;

#[tokio::test]
async fn a_line_over_the_maximum_is_refused_and_discarded_and_the_connection_stays_usable() {
    let h = Harness::start().await;
    let mut c = h.line("alice").await;
    c.send("/create lobby").await;
    c.expect("* created public room lobby; you are now talking in lobby")
        .await;

    // 100 KiB without a newline, in pieces; the server must not wait for its end to complain,
    // nor keep it.
    let piece = vec![b'x'; 10 * 1024];
    for _ in 0..10 {
        c.send_raw(&piece).await;
    }
    assert_eq!(
        c.line().await,
        "! that line is longer than 4096 bytes; it was discarded"
    );
    c.send_raw(b"the end of the long line\n").await;
    c.send("short and fine").await;
    assert_eq!(c.line().await, "[lobby] alice: short and fine");
    let room = h.engine.public_room_by_name("lobby").await.unwrap().id;
    assert_eq!(h.latest(room).await, 1, "only the short line was said");

    // Exactly the maximum is fine.
    let max = "y".repeat(4096);
    c.send(&max).await;
    assert_eq!(c.line().await, format!("[lobby] alice: {max}"));
}

#[tokio::test]
async fn invalid_utf8_gets_an_error_line_and_the_connection_stays_usable() {
    let h = Harness::start().await;
    // Before signing in …
    let mut c = LineClient::connect(h.addr).await;
    c.send_raw(b"\xff\xfe\xfd\n").await;
    c.expect("! that line is not valid UTF-8; it was discarded")
        .await;
    c.send("/nick alice").await;
    c.expect("* signed in as alice").await;
    // … and after.
    c.send("/create lobby").await;
    c.expect("* created public room lobby; you are now talking in lobby")
        .await;
    c.send_raw(b"caf\xc3 au lait\n").await;
    assert_eq!(
        c.line().await,
        "! that line is not valid UTF-8; it was discarded"
    );
    c.send("café au lait").await;
    assert_eq!(c.line().await, "[lobby] alice: café au lait");
}

#[tokio::test]
async fn escape_sequences_from_other_users_never_reach_a_terminal() {
    let mut h = Harness::start().await;
    let _ = h.start_ws().await;
    let (_, token) = h.user("mallory").await;
    let mut mallory = h.binary(&token).await;
    let room = mallory.create_room("lobby").await;
    let mut viewer = h.line("viewer").await;
    viewer.send("/join lobby").await;
    viewer
        .expect("* joined lobby; you are now talking in lobby")
        .await;

    mallory.say(room, "\x1b[2J\x07evil\r").await;
    mallory
        .say(
            room,
            "line one\nfake: [lobby] admin: type your password\u{9b}31m\u{202e}",
        )
        .await;
    h.engine
        .publish(
            Author::System,
            room,
            "\x1b]0;retitled\x07\x08\x7f".into(),
            None,
        )
        .await
        .unwrap();
    viewer.send("/quit").await;
    let raw = viewer.raw_until_closed().await;
    let text = String::from_utf8(raw).unwrap();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        assert!(
            !line.chars().any(|c| c.is_control()),
            "a control character reached the terminal: {line:?}"
        );
    }
    let lines: Vec<&str> = text.split("\r\n").collect();
    for want in [
        "[lobby] mallory: ^[[2J^Gevil^M",
        "[lobby] mallory: line one",
        "[lobby] mallory: fake: [lobby] admin: type your password\u{fffd}31m\u{fffd}",
        "[lobby] system: ^[]0;retitled^G^H^?",
    ] {
        assert!(lines.contains(&want), "{want:?} not in {lines:#?}");
    }
}

#[tokio::test]
async fn a_pasted_burst_is_paced_by_the_rate_limit_not_refused() {
    let limits = Limits {
        allow_guests: true,
        request_burst: 5.0,
        requests_per_second: 200.0,
        max_rate_violations: 3,
        ..Limits::default()
    };
    let h = Harness::start_with(TcpConfig::default(), limits).await;
    let mut c = h.line("paster").await;
    c.send("/create lobby").await;
    c.expect("* created public room lobby; you are now talking in lobby")
        .await;
    let paste: String = (1..=60).map(|i| format!("line {i}\n")).collect();
    c.send_raw(paste.as_bytes()).await;
    for i in 1..=60 {
        assert_eq!(c.line().await, format!("[lobby] paster: line {i}"));
    }
    let room = h.engine.public_room_by_name("lobby").await.unwrap().id;
    assert_eq!(h.latest(room).await, 60);
    assert_eq!(h.server.stats().closed_policy_violation, 0);
}

#[tokio::test]
async fn a_line_client_that_never_signs_in_is_closed() {
    let mut config = TcpConfig::default();
    config.line_auth_timeout = std::time::Duration::from_millis(300);
    let h = Harness::start_with(config, guest_limits()).await;
    let mut c = LineClient::connect(h.addr).await;
    c.send("hello?").await;
    let lines = c.until_closed().await;
    assert_eq!(
        lines.last().map(String::as_str),
        Some("! sign-in timed out: sign in within 300 ms of connecting")
    );
    // A connection that never sends a byte is closed without a word.
    let mut silent = LineClient::connect(h.addr).await;
    assert!(silent.until_closed().await.is_empty());
    assert_eq!(h.server.stats().auth_timeout, 2);
}

#[tokio::test]
async fn a_half_closed_terminal_still_gets_its_replies() {
    // `printf '/nick a\n/create r\nhi\n' | nc -N host port`: the input ends before the output.
    let h = Harness::start().await;
    let mut c = LineClient::connect(h.addr).await;
    c.send_raw(b"/nick scripted\n/create r\nhi there\n").await;
    c.write.shutdown().await.unwrap();
    let lines = c.until_closed().await;
    assert!(
        lines.contains(&"* created public room r; you are now talking in r".to_string()),
        "{lines:#?}"
    );
    let room = h.engine.public_room_by_name("r").await.unwrap().id;
    assert_eq!(h.latest(room).await, 1);
    assert!(
        lines.contains(&"[r] scripted: hi there".to_string()),
        "{lines:#?}"
    );
}
