//! The embedded SQLite default: a fresh file is created and migrated, and everything survives
//! a restart.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn data_survives_a_restart_on_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let db = db.to_str().unwrap();
    let args = [
        "chat-server",
        "--http-addr",
        "127.0.0.1:0",
        "--no-tcp",
        "--db",
        db,
    ];

    let s = start_with(&args).await;
    let (_, status) = s.get("/status", None).await;
    assert_eq!(status["store"], "sqlite");
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, "kept").await;
    let mut ws = s.ws(&format!("/chatsocket/{room}"), &alice).await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let sent = ws
        .request(
            1,
            json!({"type": "send", "room": room, "body": "written down", "client_msg_id": "w-1"}),
        )
        .await;
    assert_eq!(sent["seq"], 1);
    s.stop().await;
    assert!(std::path::Path::new(db).is_file());

    // A new process on the same file: the account, its session, the room and the log.
    let s = start_with(&args).await;
    let (st, me) = s.get("/api/me", Some(&alice)).await;
    assert_eq!(
        (st.as_u16(), me["username"].as_str()),
        (200, Some("alice")),
        "the session survived"
    );
    let (st, _) = s
        .post(
            "/api/login",
            None,
            json!({"username": "alice", "password": "correct horse"}),
        )
        .await;
    assert_eq!(st.as_u16(), 200);
    let (_, page) = s
        .get(&format!("/api/rooms/{room}/history"), Some(&alice))
        .await;
    assert_eq!(page["entries"][0]["body"], "written down");
    // The retry of an acknowledged send is recognised across the restart.
    let (_, dup) = s
        .post(
            &format!("/api/rooms/{room}/messages"),
            Some(&alice),
            json!({"body": "written down", "client_msg_id": "w-1"}),
        )
        .await;
    assert_eq!(
        (dup["seq"].as_u64(), dup["duplicate"].as_bool()),
        (Some(1), Some(true))
    );
    s.stop().await;
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(
        &path,
        "my notes, not a database, long enough to have a header",
    )
    .unwrap();
    let config = chat_server::Config::try_from_args([
        "chat-server",
        "--http-addr",
        "127.0.0.1:0",
        "--no-tcp",
        "--db",
        path.to_str().unwrap(),
    ])
    .unwrap();
    let err = chat_server::Server::start(config).await.unwrap_err();
    assert!(
        err.to_string().contains("cannot open the database"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "my notes, not a database, long enough to have a header"
    );
}
