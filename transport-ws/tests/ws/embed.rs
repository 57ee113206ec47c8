//! Embedding: an application that does its own HTTP hands over upgraded streams of any I/O.

use crate::common::*;
use chat_core::Codec;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::{HeaderMap, Uri};
use tokio_tungstenite::tungstenite::protocol::Role;
use transport_ws::{CloseCause, CodecChoice, WsConfig};

#[tokio::test]
async fn an_upgraded_stream_over_any_io_runs_a_session() {
    let h = Harness::start().await;
    let (alice, token) = h.user("alice").await;

    // What an HTTP framework would do: decide on the request's URI and headers...
    let uri: Uri = format!("/chat?token={token}").parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("host", "app.example".parse().unwrap());
    headers.insert("origin", "https://app.example".parse().unwrap());
    headers.insert("sec-websocket-protocol", "chat.v1.json".parse().unwrap());
    let admission = h.server.authorize(&uri, &headers).await.unwrap();
    assert_eq!(
        admission.identity.as_ref().map(|i| i.user),
        Some(alice.user)
    );
    assert_eq!(admission.protocol, Some("chat.v1.json"));
    assert_eq!(admission.codec, CodecChoice::Fixed(Codec::Json));
    headers.insert("origin", "https://evil.example".parse().unwrap());
    let refused = h.server.authorize(&uri, &headers).await.unwrap_err();
    assert_eq!(
        (refused.status(), refused.code()),
        (403, "forbidden_origin")
    );
    assert!(
        String::from_utf8(refused.to_http_bytes())
            .unwrap()
            .starts_with("HTTP/1.1 403 Forbidden\r\n")
    );

    // ...then upgrade over whatever I/O it has (here an in-memory pipe) and hand it over.
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let config = WsConfig::default().websocket_config();
    let ws = WebSocketStream::from_raw_socket(server_io, Role::Server, Some(config)).await;
    let server = h.server.clone();
    let run = tokio::spawn(async move { server.run_admitted(ws, admission).await });

    let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
    client
        .send(Message::text(r#"{"type":"hello","version":1,"id":1}"#))
        .await
        .unwrap();
    let welcome = loop {
        match client.next().await.unwrap().unwrap() {
            Message::Text(t) => break serde_json::from_str::<serde_json::Value>(&t).unwrap(),
            _ => continue,
        }
    };
    assert_eq!(welcome["user"]["username"], "alice");
    assert_eq!(h.server.stats().open, 1);

    // Shutting the server down reaches embedded connections too.
    h.server.shutdown();
    let close = loop {
        match client.next().await {
            Some(Ok(Message::Close(f))) => break f.unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1001);
    drop(client);
    assert_eq!(run.await.unwrap(), CloseCause::Shutdown);
}
