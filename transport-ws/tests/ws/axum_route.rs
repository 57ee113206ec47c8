//! The axum feature: the same decisions and closes, behind axum's router.

use crate::common::*;
use chat_core::{Engine, Timestamp};
use serde_json::json;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use transport_ws::{WsConfig, WsServer};

#[tokio::test]
async fn the_axum_route_authorizes_runs_sessions_and_closes_like_the_server() {
    let engine = Engine::new(Arc::new(chat_store::MemoryStore::new()));
    let user = engine
        .store()
        .create_user("alice", None, false, Timestamp::now())
        .await
        .unwrap();
    let token = engine.accounts().issue_token(user.id).await.unwrap();
    let server = WsServer::new(engine, WsConfig::default()).unwrap();
    let app = axum::Router::new().merge(transport_ws::axum::router(server.clone(), "/ws"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let connect = |query: String| async move {
        let req = format!("ws://{addr}/ws{query}")
            .into_client_request()
            .unwrap();
        Client::handshake(req, TcpStream::connect(addr).await.unwrap()).await
    };

    let (status, body, _) = refusal(connect("?token=wrong".into()).await.err().unwrap());
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );

    let mut c = connect(format!("?token={}", token.as_str())).await.unwrap();
    let w = c.ok(json!({"type": "hello", "version": 1})).await;
    assert_eq!(w["user"]["username"], "alice");

    // The limits apply, and the close code is the documented one.
    let mut big = connect(format!("?token={}", token.as_str())).await.unwrap();
    big.send_raw(Message::text("x".repeat(100 * 1024))).await;
    assert_eq!(big.close_code().await, Some(1009));

    server.shutdown();
    assert_eq!(c.close_code().await, Some(1001));
}
