//! The handshake: credentials, origin, caps, timeouts and malformed requests — all decided
//! before the upgrade.

use crate::common::*;
use chat_core::{AuthSession, Limits, Timestamp};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use transport_ws::WsConfig;

/// Sends raw bytes and reads the whole response (the server closes after refusing).
async fn raw_exchange(h: &Harness, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut out))
        .await
        .expect("the server answers and closes")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

#[tokio::test]
async fn missing_invalid_and_expired_tokens_get_401_without_an_upgrade() {
    let h = Harness::start().await;
    let (alice, _) = h.user("alice").await;

    let (status, body, resp) = refusal(h.try_connect(h.request("")).await.err().unwrap());
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized");
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );

    let (status, body, _) = refusal(
        h.try_connect(h.request("?token=not-a-real-token"))
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );

    // A token whose session expired yesterday.
    let expired = "expired-token-0123456789";
    let now = Timestamp::now();
    h.engine
        .store()
        .create_auth_session(AuthSession {
            token_hash: chat_core::auth::hash_token(expired),
            user: alice.user,
            created_at: Timestamp(now.0 - 2 * 86_400_000),
            expires_at: Timestamp(now.0 - 86_400_000),
        })
        .await
        .unwrap();
    let (status, _, _) = refusal(
        h.try_connect(h.request(&format!("?token={expired}")))
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(status, 401);

    // A malformed Authorization header is refused even though nothing else is wrong.
    let mut req = h.request("");
    req.headers_mut()
        .insert("Authorization", "Basic YWxpY2U6cHc=".parse().unwrap());
    assert_eq!(refusal(h.try_connect(req).await.err().unwrap()).0, 401);

    assert_eq!(h.server.stats().rejected_unauthorized, 4);
    assert_eq!(h.server.stats().upgraded, 0);
    assert_eq!(h.engine.stats().sessions, 0);
}

#[tokio::test]
async fn bearer_header_query_and_cookie_are_accepted_as_configured() {
    let h = Harness::start().await;
    let (_, token) = h.user("alice").await;

    let mut req = h.request("");
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let mut c = h.try_connect(req).await.unwrap();
    let w = c.ok(json!({"type": "hello", "version": 1})).await;
    assert_eq!(w["user"]["username"], "alice");

    let mut req = h.request("");
    req.headers_mut().insert(
        "Cookie",
        format!("theme=dark; chat_token={token}").parse().unwrap(),
    );
    h.try_connect(req).await.unwrap();

    h.connect(&token).await;

    // With the query parameter and cookie switched off, only the header works.
    let mut config = WsConfig::default();
    config.auth.query_token = false;
    config.auth.cookie = None;
    let h2 = Harness::start_with(config, Limits::default()).await;
    let (_, token) = h2.user("bob").await;
    let e = h2
        .try_connect(h2.request(&format!("?token={token}")))
        .await
        .err()
        .unwrap();
    assert_eq!(refusal(e).0, 401);
    let mut req = h2.request("");
    req.headers_mut()
        .insert("Cookie", format!("chat_token={token}").parse().unwrap());
    assert_eq!(refusal(h2.try_connect(req).await.err().unwrap()).0, 401);
}

#[tokio::test]
async fn a_foreign_origin_gets_403_and_the_same_host_is_allowed() {
    let h = Harness::start().await;
    let (_, token) = h.user("alice").await;

    let mut req = h.request(&format!("?token={token}"));
    req.headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    let (status, body, _) = refusal(h.try_connect(req).await.err().unwrap());
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden_origin"))
    );

    let mut req = h.request(&format!("?token={token}"));
    req.headers_mut()
        .insert("Origin", format!("http://{}", h.addr).parse().unwrap());
    h.try_connect(req).await.unwrap();

    // An explicit allow-list, and no Origin-less clients.
    let mut config = WsConfig::default();
    config.origins.allowed = vec!["https://chat.example.com".into()];
    config.origins.same_host = false;
    config.origins.allow_missing = false;
    let h2 = Harness::start_with(config, Limits::default()).await;
    let (_, token) = h2.user("bob").await;
    let mut req = h2.request(&format!("?token={token}"));
    req.headers_mut()
        .insert("Origin", "https://chat.example.com".parse().unwrap());
    h2.try_connect(req).await.unwrap();
    let e = h2
        .try_connect(h2.request(&format!("?token={token}")))
        .await
        .err()
        .unwrap();
    assert_eq!(refusal(e).0, 403);
    assert_eq!(h2.server.stats().rejected_forbidden, 1);
}

#[tokio::test]
async fn the_development_identity_is_off_by_default_and_works_when_enabled() {
    let h = Harness::start().await;
    let e = h.try_connect(h.request("?user=alice")).await.err().unwrap();
    assert_eq!(refusal(e).0, 401);

    let mut config = WsConfig::default();
    config.auth.insecure_dev_user_param = Some("user".into());
    let h = Harness::start_with(config, Limits::default()).await;
    let mut c = h.try_connect(h.request("?user=alice")).await.unwrap();
    let w = c.ok(json!({"type": "hello", "version": 1})).await;
    assert_eq!(w["user"]["username"], "alice");
    // A name that is not a valid username is still refused.
    let e = h.try_connect(h.request("?user=")).await.err().unwrap();
    assert_eq!(refusal(e).0, 401);
}

#[tokio::test]
async fn connection_caps_answer_503_globally_and_429_per_address() {
    let mut config = WsConfig::default();
    config.max_connections = 2;
    config.max_connections_per_ip = 10;
    let h = Harness::start_with(config, Limits::default()).await;
    let (_, token) = h.user("alice").await;
    let mut first = h.connect(&token).await;
    let _second = h.connect(&token).await;
    let e = h
        .try_connect(h.request(&format!("?token={token}")))
        .await
        .err()
        .unwrap();
    let (status, body, resp) = refusal(e);
    assert_eq!((status, body["error"].as_str()), (503, Some("server_busy")));
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(h.server.stats().rejected_busy, 1);

    // A closed connection frees its slot.
    first.ws.close(None).await.unwrap();
    let _echo = first.close_frame().await;
    drop(first);
    h.until("the slot is freed", |h| h.server.limiter().open() == 1)
        .await;
    h.connect(&token).await;

    let mut config = WsConfig::default();
    config.max_connections = 10;
    config.max_connections_per_ip = 1;
    let h = Harness::start_with(config, Limits::default()).await;
    let (_, token) = h.user("bob").await;
    let _only = h.connect(&token).await;
    let e = h
        .try_connect(h.request(&format!("?token={token}")))
        .await
        .err()
        .unwrap();
    let (status, body, _) = refusal(e);
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("too_many_connections"))
    );
    assert_eq!(h.server.stats().rejected_per_ip, 1);
}

#[tokio::test]
async fn a_slowloris_handshake_is_dropped_at_the_handshake_timeout() {
    let mut config = WsConfig::default();
    config.handshake_timeout = Duration::from_millis(300);
    let h = Harness::start_with(config, Limits::default()).await;
    let (_, token) = h.user("alice").await;

    let started = Instant::now();
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    let request = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    // One byte every 20 ms: always making progress, never finishing in time.
    let mut closed = false;
    for byte in request.as_bytes() {
        if tcp.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(20), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => panic!(
                "unexpected answer: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => {}
        }
    }
    assert!(closed, "the server never dropped the dribbling client");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    h.until("the abandoned handshake is counted", |h| {
        h.server.stats().handshake_abandoned == 1
    })
    .await;
    // Meanwhile, and afterwards, a prompt client is served.
    h.connect(&token).await;
}

#[tokio::test]
async fn malformed_oversized_and_non_websocket_requests_are_refused() {
    let mut config = WsConfig::default();
    config.path = Some("/ws".into());
    let h = Harness::start_with(config, Limits::default()).await;
    let (_, token) = h.user("alice").await;

    let plain = raw_exchange(&h, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status_of(&plain), 426, "{plain}");
    assert!(plain.contains("\"error\":\"upgrade_required\""), "{plain}");

    let huge = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    assert_eq!(status_of(&raw_exchange(&h, huge.as_bytes()).await), 431);

    let garbage = raw_exchange(&h, b"\x16\x03\x01 this is not HTTP\r\n\r\n").await;
    assert_eq!(status_of(&garbage), 400);

    let e = h
        .try_connect(
            format!("ws://{}/elsewhere?token={token}", h.addr)
                .parse::<tokio_tungstenite::tungstenite::http::Uri>()
                .map(|u| {
                    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
                    u.into_client_request().unwrap()
                })
                .unwrap(),
        )
        .await
        .err()
        .unwrap();
    assert_eq!(refusal(e).0, 404);

    let post = format!(
        "POST /ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    assert_eq!(status_of(&raw_exchange(&h, post.as_bytes()).await), 405);

    let old = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let resp = raw_exchange(&h, old.as_bytes()).await;
    assert_eq!(status_of(&resp), 426);
    assert!(resp.contains("Sec-WebSocket-Version: 13"), "{resp}");

    // None of that disturbed the server.
    h.connect(&token).await;
    assert_eq!(h.server.stats().rejected_bad_request, 6);
}

#[tokio::test]
async fn bytes_sent_right_after_the_request_are_not_lost() {
    let h = Harness::start().await;
    let (_, token) = h.user("alice").await;
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    // The request and a masked text frame `{"type":"ping"}` in one write.
    let payload = br#"{"type":"ping"}"#;
    let mask = [1u8, 2, 3, 4];
    let mut bytes = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .into_bytes();
    bytes.extend([0x81, 0x80 | payload.len() as u8]);
    bytes.extend(mask);
    bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&bytes).await.unwrap();

    let mut got = Vec::new();
    let pong = br#"{"type":"pong"}"#;
    tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 1024];
        while !got.windows(pong.len()).any(|w| w == pong) {
            let n = tcp.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "closed: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("a pong");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{text}"
    );
}

#[tokio::test]
async fn with_in_band_hello_a_credential_free_connection_must_authenticate_first() {
    let mut config = WsConfig::default();
    config.auth.hello = true;
    let h = Harness::start_with(config, Limits::default()).await;
    let (_, token) = h.user("alice").await;

    let mut c = h.try_connect(h.request("")).await.unwrap();
    let w = c
        .request(json!({"type": "hello", "version": 1, "auth": {"token": token}}))
        .await;
    assert_eq!(
        (w["type"].as_str(), w["user"]["username"].as_str()),
        (Some("welcome"), Some("alice"))
    );
    assert_eq!(c.request(json!({"type": "ping"})).await["type"], "pong");

    // A wrong token in the hello: the error echoes the hello's id, then close 4401.
    let mut c = h.try_connect(h.request("")).await.unwrap();
    let e = c
        .request(json!({"type": "hello", "version": 1, "auth": {"token": "nope"}}))
        .await;
    assert_eq!(e["code"], "invalid_token");
    let f = c.close_frame().await.expect("a close frame");
    assert_eq!(
        (u16::from(f.code), f.reason.as_str()),
        (4401, "unauthenticated")
    );

    // Anything but a hello first.
    let mut c = h.try_connect(h.request("")).await.unwrap();
    let e = c.request(json!({"type": "rooms"})).await;
    assert_eq!(e["code"], "unauthenticated");
    assert_eq!(c.close_code().await, Some(4401));

    // A credential presented at the handshake still decides there.
    let e = h.try_connect(h.request("?token=nope")).await.err().unwrap();
    assert_eq!(refusal(e).0, 401);
    assert_eq!(h.server.stats().closed_unauthenticated, 2);
}
