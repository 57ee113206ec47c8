//! The HTTP listener's own limits: slow request heads and bodies, connection caps, and a
//! shutdown that does not wait for a client that never finishes.

use crate::common::{PATIENCE, start};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads what the server sends until it closes the connection; fails the test if it does not
/// close within `PATIENCE`.
async fn until_closed(c: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("the server closes the connection");
    String::from_utf8_lossy(&got).into_owned()
}

/// The JSON body of a raw HTTP/1.1 response.
fn body(response: &str) -> Value {
    let (_, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_off() {
    let s = start(&["--http-header-timeout-secs", "0.3"]).await;
    let mut slow = TcpStream::connect(s.addr()).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    until_closed(&mut slow).await;
    // A keep-alive connection left idle after a response is closed the same way.
    let mut idle = TcpStream::connect(s.addr()).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = until_closed(&mut idle).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    s.stop().await;
}

#[tokio::test]
async fn a_request_body_that_never_ends_gets_408() {
    let s = start(&["--http-request-timeout-secs", "0.3"]).await;
    let mut slow = TcpStream::connect(s.addr()).await.unwrap();
    slow.write_all(
        b"POST /api/login HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
          content-length: 100\r\n\r\n{\"user",
    )
    .await
    .unwrap();
    let response = until_closed(&mut slow).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert_eq!(body(&response)["error"]["code"], "request_timeout");
    s.stop().await;
}

#[tokio::test]
async fn plain_http_connections_are_capped_per_address() {
    let s = start(&["--max-http-connections-per-ip", "2"]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(s.addr()).await.unwrap());
    }
    // The cap counts accepted connections, which the two above are once they answer.
    for c in &mut held {
        c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        tokio::time::timeout(PATIENCE, c.read_exact(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
    }
    let mut third = TcpStream::connect(s.addr()).await.unwrap();
    let refused = until_closed(&mut third).await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert_eq!(body(&refused)["error"]["code"], "too_many_connections");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 5\r\n"),
        "{refused}"
    );
    // A connection that ends gives its place back (by the time the server has closed it).
    let mut leaving = held.pop().unwrap();
    leaving.shutdown().await.unwrap();
    until_closed(&mut leaving).await;
    let (status, _) = s.get("/health", None).await;
    assert_eq!(status, 200);
    s.stop().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_request_that_never_comes() {
    // A request may take 0.5 s, so a shutdown waits that long for one in progress — not the
    // 30 s a request head may take to arrive.
    let s = start(&["--http-request-timeout-secs", "0.5"]).await;
    let mut slow = TcpStream::connect(s.addr()).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, s.stop())
        .await
        .expect("the server stops");
    until_closed(&mut slow).await;
}
