//! The HTTP side: sign-in and cookies, rooms, history, invites, direct messages, status, the
//! admin API, the legacy routes, and bad input of every kind.

use crate::common::*;
use chat_core::{Invite, RoomId, Timestamp, UserId};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn register_sign_in_and_the_session_cookie() {
    let s = start(&[]).await;
    let r = s
        .http
        .post(s.url("/api/register"))
        .json(&json!({"username": "alice", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"] {
        assert!(cookie.contains(attr), "{attr} missing from {cookie}");
    }
    let (_, body) = decode(r).await;
    let token = body["token"].as_str().unwrap();
    assert!(cookie.starts_with(&format!("chat_token={token};")));
    assert_eq!(body["user"]["username"], "alice");

    // The cookie and the bearer token both identify the user.
    let me = |req: reqwest::RequestBuilder| async move { decode(req.send().await.unwrap()).await };
    let (st, who) = me(s
        .http
        .get(s.url("/api/me"))
        .header("Cookie", format!("chat_token={token}")))
    .await;
    assert_eq!(
        (st, who["username"].as_str()),
        (StatusCode::OK, Some("alice"))
    );
    let (st, who) = me(s.http.get(s.url("/api/me")).bearer_auth(token)).await;
    assert_eq!(
        (st, who["username"].as_str()),
        (StatusCode::OK, Some("alice"))
    );
    assert_error(&s.get("/api/me", None).await, 401, "unauthenticated");

    // Sign in again; wrong passwords and unknown users look the same.
    let login =
        |u: &str, p: &str| s.post("/api/login", None, json!({"username": u, "password": p}));
    let (st, body) = login("alice", "correct horse").await;
    assert_eq!(st, StatusCode::OK);
    assert!(body["token"].as_str().is_some_and(|t| t != token));
    assert_error(
        &login("alice", "wrong horse").await,
        401,
        "invalid_credentials",
    );
    assert_error(
        &login("nobody", "wrong horse").await,
        401,
        "invalid_credentials",
    );

    // Registration rules.
    let reg =
        |u: &str, p: &str| s.post("/api/register", None, json!({"username": u, "password": p}));
    assert_error(&reg("ALICE", "another horse").await, 409, "already_exists");
    assert_error(&reg("bob", "short").await, 422, "invalid_field");
    assert_error(&reg("no spaces", "long enough").await, 422, "invalid_field");
    s.stop().await;
}

#[tokio::test]
async fn the_sign_in_page_and_the_legacy_auth_routes() {
    let s = start(&["--auto-register"]).await;
    // Signed out, `/` sends you to the sign-in page.
    let r = s.http.get(s.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/auth");
    let page = s.http.get(s.url("/auth")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<label for="username">"#) && html.contains(r#"action="/auth""#));

    // The form: auto-registration on first sign-in, then a redirect with the cookie.
    let form = [
        ("username", "carol"),
        ("password", "correct horse"),
        ("action", "login"),
        ("next", "/chat/7"),
    ];
    let r = s
        .http
        .post(s.url("/auth"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/chat/7");
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let home = s
        .http
        .get(s.url("/"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), StatusCode::OK);
    assert!(home.text().await.unwrap().contains("Your rooms"));

    // A wrong password shows the form again, with the error, as 401.
    let r = s
        .http
        .post(s.url("/auth"))
        .form(&[("username", "carol"), ("password", "wrong horse")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Wrong username or password")
    );

    // An open redirect is not possible through `next`.
    let r = s
        .http
        .post(s.url("/auth"))
        .form(&[
            ("username", "carol"),
            ("password", "correct horse"),
            ("next", "//evil.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/");

    // JSON clients of the old `/auth` get JSON.
    let (st, body) = s
        .post(
            "/auth",
            None,
            json!({"username": "carol", "password": "correct horse"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["user"]["username"], "carol");

    // The old `/logout`: revokes the token, clears the cookie, back to the sign-in page.
    let r = s
        .http
        .post(s.url("/logout"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let me = s
        .http
        .get(s.url("/api/me"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    s.stop().await;
}

#[tokio::test]
async fn rooms_messages_history_and_unread_counts() {
    let s = start(&[]).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;

    let (st, body) = s
        .post(
            "/api/rooms",
            Some(&alice),
            json!({"name": "lobby", "kind": "public"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let room = body["room"]["id"].as_u64().unwrap();
    assert_eq!(body["room"]["kind"], "public");
    assert_error(
        &s.post(
            "/api/rooms",
            Some(&bob),
            json!({"name": "LOBBY", "kind": "public"}),
        )
        .await,
        409,
        "already_exists",
    );

    // Bob finds and joins it.
    let (_, public) = s.get("/api/rooms/public", Some(&bob)).await;
    assert_eq!(public["rooms"][0]["room"]["id"], room);
    let (st, _) = s
        .post(&format!("/api/rooms/{room}/join"), Some(&bob), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);

    for i in 1..=5 {
        let (st, body) = s
            .post(
                &format!("/api/rooms/{room}/messages"),
                Some(&alice),
                json!({"body": format!("message {i}"), "client_msg_id": format!("m-{i}")}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED);
        assert_eq!(body["seq"], i);
    }
    // A retry with the same client_msg_id is stored once.
    let (_, dup) = s
        .post(
            &format!("/api/rooms/{room}/messages"),
            Some(&alice),
            json!({"body": "message 5", "client_msg_id": "m-5"}),
        )
        .await;
    assert_eq!(
        (dup["seq"].as_u64(), dup["duplicate"].as_bool()),
        (Some(5), Some(true))
    );

    let history = |q: &str| s.get_owned(format!("/api/rooms/{room}/history{q}"), &bob);
    let (_, page) = history("?limit=2").await;
    assert_eq!(seqs(&page), [4, 5]);
    assert_eq!(page["has_more"], true);
    let (_, page) = history("?before=4&limit=2").await;
    assert_eq!(seqs(&page), [2, 3]);
    let (_, page) = history("?after=3").await;
    assert_eq!(seqs(&page), [4, 5]);
    assert_eq!(page["has_more"], false);
    assert_eq!(page["entries"][0]["sender_name"], "alice");
    assert_error(&history("?before=4&after=1").await, 422, "invalid_field");
    assert_error(&history("?limit=lots").await, 400, "invalid_request");

    // Unread counts, and read markers moving them.
    let unread = |u: &User| {
        let s = &s;
        let u = u.clone();
        async move {
            let (_, rooms) = s.get("/api/rooms", Some(&u)).await;
            rooms["rooms"][0]["unread"].as_u64().unwrap()
        }
    };
    assert_eq!(unread(&bob).await, 5);
    assert_eq!(unread(&alice).await, 0, "your own messages are not unread");
    let (st, marker) = s
        .post(
            &format!("/api/rooms/{room}/read"),
            Some(&bob),
            json!({"seq": 3}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (marker["read_seq"].as_u64(), marker["unread"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(unread(&bob).await, 2);
    assert_error(
        &s.post(
            &format!("/api/rooms/{room}/read"),
            Some(&bob),
            json!({"seq": 99}),
        )
        .await,
        409,
        "seq_ahead",
    );

    // Members, with roles.
    let (_, members) = s
        .get(&format!("/api/rooms/{room}/members"), Some(&bob))
        .await;
    let names: Vec<_> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user"]["username"].as_str().unwrap(),
                m["role"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, [("alice", "owner"), ("bob", "member")]);

    // The room page renders the history.
    let page = s
        .http
        .get(s.url(&format!("/chat/{room}")))
        .header("Cookie", bob.cookie())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("message 5") && html.contains(r#"role="log""#));
    s.stop().await;
}

fn seqs(page: &serde_json::Value) -> Vec<u64> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

impl TestServer {
    async fn get_owned(&self, path: String, user: &User) -> (StatusCode, serde_json::Value) {
        self.get(&path, Some(user)).await
    }
}

#[tokio::test]
async fn invite_links_join_and_explain_themselves() {
    let s = start(&[]).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;

    // The old routes: a new chat (a group room), then an invite to it.
    let (st, chat) = s
        .post("/newchat", Some(&alice), json!({"chat_name": "team"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{chat}");
    let room = chat["chat_id"].as_u64().unwrap();
    assert_eq!(chat["url"], format!("/chat/{room}"));
    let (st, invite) = s
        .post(&format!("/create_invite/{room}"), Some(&alice), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{invite}");
    let code = invite["code"].as_str().unwrap().to_string();
    let week = 7 * 24 * 3600 * 1000;
    let expires = invite["expires_at"].as_i64().unwrap();
    assert!(
        (expires - Timestamp::now().0 - week).abs() < 60_000,
        "7-day expiry"
    );

    // Before the invite, bob may not look in.
    assert_error(
        &s.get(&format!("/api/rooms/{room}/history"), Some(&bob))
            .await,
        403,
        "not_member",
    );
    let page = |path: String, u: &User| {
        let req = s.http.get(s.url(&path)).header("Cookie", u.cookie());
        async move { req.send().await.unwrap() }
    };
    assert_eq!(
        page(format!("/chat/{room}"), &bob).await.status(),
        StatusCode::FORBIDDEN
    );

    // Following the link joins and opens the room.
    let r = page(format!("/invite/{code}"), &bob).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], format!("/chat/{room}"));
    assert_eq!(
        page(format!("/chat/{room}"), &bob).await.status(),
        StatusCode::OK
    );
    let (_, rooms) = s.get("/api/rooms", Some(&bob)).await;
    assert_eq!(rooms["rooms"][0]["room"]["name"], "team");

    // Signed out, the link goes through the sign-in page and comes back.
    let r = s
        .http
        .get(s.url(&format!("/invite/{code}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()["location"],
        format!("/auth?next=/invite/{code}")
    );

    // A used-up invite, through the JSON API.
    let (st, once) = s
        .post(
            &format!("/api/rooms/{room}/invites"),
            Some(&alice),
            json!({"max_uses": 1}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let once = once["code"].as_str().unwrap().to_string();
    let (_, info) = s.get(&format!("/api/invites/{once}"), Some(&carol)).await;
    assert_eq!(info["room_info"]["name"], "team");
    let (st, _) = s
        .post(
            &format!("/api/invites/{once}/redeem"),
            Some(&carol),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let dave = s.register("dave").await;
    assert_error(
        &s.post(
            &format!("/api/invites/{once}/redeem"),
            Some(&dave),
            json!({}),
        )
        .await,
        410,
        "invite_exhausted",
    );
    let r = page(format!("/invite/{once}"), &dave).await;
    assert_eq!(r.status(), StatusCode::GONE);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("used as many times as it allows")
    );

    // An expired invite (made directly in the store, with an expiry in the past).
    s.server
        .engine()
        .store()
        .create_invite(Invite {
            code: "expired-code".into(),
            room: RoomId(room),
            created_by: UserId(alice.id),
            created_at: Timestamp(1_000),
            expires_at: Timestamp(2_000),
            max_uses: None,
            uses: 0,
        })
        .await
        .unwrap();
    let r = page("/invite/expired-code".into(), &dave).await;
    assert_eq!(r.status(), StatusCode::GONE);
    assert!(r.text().await.unwrap().contains("expired on 1970-01-01"));
    assert_error(
        &s.post("/api/invites/expired-code/redeem", Some(&dave), json!({}))
            .await,
        410,
        "invite_expired",
    );

    // An unknown one.
    let r = page("/invite/no-such-code".into(), &dave).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.unwrap().contains("not valid"));
    assert_error(
        &s.post("/api/invites/nope/redeem", Some(&dave), json!({}))
            .await,
        404,
        "invite_unknown",
    );

    // Direct rooms cannot have invites.
    let (_, dm) = s
        .post("/api/direct", Some(&alice), json!({"to": "bob"}))
        .await;
    let dm = dm["room"]["id"].as_u64().unwrap();
    assert_error(
        &s.post(&format!("/create_invite/{dm}"), Some(&alice), json!({}))
            .await,
        403,
        "forbidden",
    );
    s.stop().await;
}

#[tokio::test]
async fn direct_messages() {
    let s = start(&[]).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;

    let (st, sent) = s
        .post(
            "/api/direct",
            Some(&alice),
            json!({"to": "Bob", "body": "psst"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{sent}");
    assert_eq!(sent["room"]["kind"], "direct");
    assert_eq!(sent["room"]["name"], "alice & bob");
    assert_eq!(sent["sent"]["seq"], 1);
    let room = sent["room"]["id"].as_u64().unwrap();

    // The same room both ways.
    let (_, again) = s
        .post("/api/direct", Some(&bob), json!({"to": "alice"}))
        .await;
    assert_eq!(again["room"]["id"], room);
    assert_eq!(again["sent"], serde_json::Value::Null);

    let (_, rooms) = s.get("/api/rooms", Some(&bob)).await;
    assert_eq!(rooms["rooms"][0]["unread"], 1);
    let (_, page) = s
        .get(&format!("/api/rooms/{room}/history"), Some(&bob))
        .await;
    assert_eq!(page["entries"][0]["body"], "psst");

    assert_error(
        &s.get(&format!("/api/rooms/{room}/history"), Some(&carol))
            .await,
        403,
        "not_member",
    );
    assert_error(
        &s.post("/api/direct", Some(&alice), json!({"to": "nobody"}))
            .await,
        404,
        "user_not_found",
    );
    assert_error(
        &s.post("/api/direct", Some(&alice), json!({"to": "alice"}))
            .await,
        422,
        "invalid_field",
    );
    s.stop().await;
}

#[tokio::test]
async fn status_and_health() {
    let s = start(&[]).await;
    let (st, health) = s.get("/health", None).await;
    assert_eq!(
        (st, health["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (st, status) = s.get("/status", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(status["connected_clients"], 0);
    assert_eq!(status["store"], "memory");

    let alice = s.register("alice").await;
    let room = s.create_room(&alice, "r").await;
    let mut ws = s.ws("/ws", &alice).await;
    ws.request(1, json!({"type": "subscribe", "room": room}))
        .await;
    let (_, status) = s.get("/status", None).await;
    assert_eq!(status["connected_clients"], 1);
    assert_eq!(status["sessions"], 1);
    assert_eq!(status["rooms"], 1);
    assert_eq!(status["websocket_connections"], 1);

    // The legacy socket is a WebSocket connection too (its first frame means it is running).
    let mut legacy = s.ws(&format!("/chatsocket/{room}"), &alice).await;
    assert_eq!(legacy.next().await["type"], "subscribed");
    let (_, status) = s.get("/status", None).await;
    assert_eq!(status["sessions"], 2);
    assert_eq!(status["websocket_connections"], 2);
    s.stop().await;
}

#[tokio::test]
async fn the_admin_api_publishes_with_the_right_token_only() {
    let token = "an-admin-token-of-some-length";
    let s = start(&["--admin-token", token]).await;
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, "news").await;
    let mut ws = s.ws("/ws", &alice).await;
    ws.request(1, json!({"type": "subscribe", "room": room}))
        .await;

    let publish = |bearer: Option<&str>, body: serde_json::Value| {
        let mut req = s.http.post(s.url("/api/admin/publish")).json(&body);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        async move { decode(req.send().await.unwrap()).await }
    };
    let msg = json!({"room": room, "body": "maintenance at noon"});
    assert_error(&publish(None, msg.clone()).await, 401, "unauthenticated");
    assert_error(
        &publish(Some("wrong-token"), msg.clone()).await,
        401,
        "invalid_token",
    );
    // A user's token is not the admin token.
    assert_error(
        &publish(Some(&alice.token), msg.clone()).await,
        401,
        "invalid_token",
    );

    let (st, body) = publish(Some(token), msg).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let live = ws.next_of("message").await;
    assert_eq!(
        (live["sender"].clone(), live["sender_name"].as_str()),
        (serde_json::Value::Null, Some("system"))
    );
    assert_eq!(live["body"], "maintenance at noon");

    // A notice to one user: live only, not stored.
    let (st, body) = publish(
        Some(token),
        json!({"username": "alice", "body": "hi from ops"}),
    )
    .await;
    assert_eq!((st, body["delivered"].as_u64()), (StatusCode::OK, Some(1)));
    assert_eq!(ws.next_of("notice").await["body"], "hi from ops");

    assert_error(
        &publish(Some(token), json!({"room": 999, "body": "x"})).await,
        404,
        "room_not_found",
    );
    assert_error(
        &publish(Some(token), json!({"body": "x"})).await,
        422,
        "invalid_field",
    );
    assert_error(
        &publish(Some(token), json!({"room": room, "body": ""})).await,
        422,
        "empty_body",
    );
    s.stop().await;

    let s = start(&[]).await;
    assert_error(
        &decode(
            s.http
                .post(s.url("/api/admin/publish"))
                .bearer_auth(token)
                .json(&json!({"room": 1, "body": "x"}))
                .send()
                .await
                .unwrap(),
        )
        .await,
        403,
        "admin_disabled",
    );
    s.stop().await;
}

#[tokio::test]
async fn the_admin_token_is_checked_before_the_body() {
    let token = "an-admin-token-of-some-length";
    let s = start(&["--admin-token", token]).await;
    let url = s.url("/api/admin/publish");
    let send =
        |req: reqwest::RequestBuilder| async move { decode(req.send().await.unwrap()).await };
    assert_error(&send(s.http.post(&url)).await, 401, "unauthenticated");
    assert_error(
        &send(
            s.http
                .post(&url)
                .header("Content-Type", "text/plain")
                .body("hi"),
        )
        .await,
        401,
        "unauthenticated",
    );
    assert_error(
        &send(
            s.http
                .post(&url)
                .bearer_auth("wrong-token")
                .json(&json!({})),
        )
        .await,
        401,
        "invalid_token",
    );
    // With the right token, the body is read.
    assert_error(
        &send(s.http.post(&url).bearer_auth(token)).await,
        415,
        "unsupported_media_type",
    );
    assert_error(
        &send(s.http.post(&url).bearer_auth(token).json(&json!({}))).await,
        400,
        "invalid_request",
    );
    s.stop().await;

    let s = start(&[]).await;
    let url = s.url("/api/admin/publish");
    let bad_body = s
        .http
        .post(&url)
        .header("Content-Type", "application/json")
        .body("{not json");
    assert_error(&send(bad_body).await, 403, "admin_disabled");
    assert_error(&send(s.http.post(&url)).await, 403, "admin_disabled");
    s.stop().await;
}

#[tokio::test]
async fn bad_input_gets_the_right_status_and_a_json_error() {
    let s = start(&["--max-request-bytes", "40000"]).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s.create_room(&alice, "private").await;
    let send_path = format!("/api/rooms/{room}/messages");

    let raw = |path: &str, content_type: Option<&str>, body: Vec<u8>| {
        let mut req = s
            .http
            .post(s.url(path))
            .header("Cookie", alice.cookie())
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        async move { decode(req.send().await.unwrap()).await }
    };
    let json_ct = Some("application/json");

    // Malformed JSON, missing fields, wrong types, wrong content type.
    assert_error(
        &raw(&send_path, json_ct, b"{\"body\": ".to_vec()).await,
        400,
        "malformed_json",
    );
    assert_error(
        &raw(&send_path, json_ct, b"[1, 2]".to_vec()).await,
        400,
        "invalid_request",
    );
    assert_error(
        &raw(&send_path, json_ct, b"{}".to_vec()).await,
        400,
        "invalid_request",
    );
    assert_error(
        &raw(&send_path, json_ct, br#"{"body": 5}"#.to_vec()).await,
        400,
        "invalid_request",
    );
    assert_error(
        &raw("/newchat", json_ct, b"{}".to_vec()).await,
        400,
        "invalid_request",
    );
    assert_error(
        &raw(&send_path, Some("text/plain"), b"{\"body\":\"x\"}".to_vec()).await,
        415,
        "unsupported_media_type",
    );

    // Oversized: the HTTP body limit (413), and a message over the engine's limit (422).
    let huge = format!("{{\"body\": \"{}\"}}", "x".repeat(50_000));
    assert_error(
        &raw(&send_path, json_ct, huge.into_bytes()).await,
        413,
        "payload_too_large",
    );
    let long = format!("{{\"body\": \"{}\"}}", "x".repeat(17_000));
    assert_error(
        &raw(&send_path, json_ct, long.into_bytes()).await,
        422,
        "body_too_large",
    );
    assert_error(
        &raw(&send_path, json_ct, br#"{"body": "   "}"#.to_vec()).await,
        422,
        "empty_body",
    );
    assert_error(
        &raw("/api/rooms", json_ct, br#"{"name": ""}"#.to_vec()).await,
        422,
        "invalid_field",
    );
    assert_error(
        &raw(
            "/api/rooms",
            json_ct,
            br#"{"name": "x", "kind": "direct"}"#.to_vec(),
        )
        .await,
        422,
        "invalid_field",
    );
    assert_error(
        &raw(
            "/api/rooms",
            json_ct,
            br#"{"name": "x", "kind": "huge"}"#.to_vec(),
        )
        .await,
        400,
        "invalid_request",
    );

    // Unknown rooms, non-members, bad ids.
    assert_error(
        &s.post(
            "/api/rooms/999/messages",
            Some(&alice),
            json!({"body": "x"}),
        )
        .await,
        404,
        "room_not_found",
    );
    assert_error(
        &s.get("/api/rooms/999/history", Some(&alice)).await,
        404,
        "room_not_found",
    );
    assert_error(
        &s.get("/api/rooms/999/members", Some(&alice)).await,
        404,
        "room_not_found",
    );
    assert_error(
        &s.post(&send_path, Some(&bob), json!({"body": "let me in"}))
            .await,
        403,
        "not_member",
    );
    assert_error(
        &s.get(&format!("/api/rooms/{room}/history"), Some(&bob))
            .await,
        403,
        "not_member",
    );
    assert_error(
        &s.get(&format!("/api/rooms/{room}"), Some(&bob)).await,
        403,
        "not_member",
    );
    assert_error(
        &s.post(&format!("/api/rooms/{room}/join"), Some(&bob), json!({}))
            .await,
        403,
        "forbidden",
    );
    assert_error(
        &s.post(&format!("/api/rooms/{room}/invites"), Some(&bob), json!({}))
            .await,
        403,
        "not_member",
    );
    assert_error(
        &s.get("/api/rooms/nine/history", Some(&alice)).await,
        400,
        "invalid_request",
    );
    assert_error(
        &s.post(&send_path, None, json!({"body": "x"})).await,
        401,
        "unauthenticated",
    );
    let bogus = User {
        id: 0,
        token: "not-a-token".into(),
    };
    assert_error(
        &s.get("/api/rooms", Some(&bogus)).await,
        401,
        "unauthenticated",
    );

    // Unknown endpoints and methods.
    assert_error(
        &s.get("/api/nothing-here", Some(&alice)).await,
        404,
        "not_found",
    );
    assert_error(
        &decode(s.http.delete(s.url("/api/rooms")).send().await.unwrap()).await,
        405,
        "method_not_allowed",
    );

    // Cross-site POSTs are refused before anything happens, even with a valid cookie.
    let cross = |path: &str, origin: &str, site: Option<&str>| {
        let mut req = s
            .http
            .post(s.url(path))
            .header("Cookie", alice.cookie())
            .header("Origin", origin)
            .json(&json!({"name": "evil room", "chat_name": "evil room"}));
        if let Some(site) = site {
            req = req.header("Sec-Fetch-Site", site);
        }
        async move { decode(req.send().await.unwrap()).await }
    };
    for path in [
        "/api/rooms",
        "/newchat",
        "/logout",
        "/api/logout",
        "/auth",
        &format!("/create_invite/{room}"),
    ] {
        assert_error(
            &cross(path, "https://evil.example", Some("cross-site")).await,
            403,
            "cross_site_request",
        );
        assert_error(
            &cross(path, "https://evil.example", None).await,
            403,
            "cross_site_request",
        );
        assert_error(&cross(path, "null", None).await, 403, "cross_site_request");
    }
    let (_, rooms) = s.get("/api/rooms", Some(&alice)).await;
    assert_eq!(
        rooms["rooms"].as_array().unwrap().len(),
        1,
        "nothing was created"
    );
    let (_, me) = s.get("/api/me", Some(&alice)).await;
    assert_eq!(
        me["username"], "alice",
        "the session survived the cross-site logout"
    );
    // The server's own origin passes.
    let (st, _) = cross("/api/rooms", &s.base, Some("same-origin")).await;
    assert_eq!(st, StatusCode::CREATED);

    // Wrong admin token (the admin API is off here: forbidden, not a crash).
    assert_error(
        &decode(
            s.http
                .post(s.url("/api/admin/publish"))
                .bearer_auth("wrong")
                .json(&json!({"room": room, "body": "x"}))
                .send()
                .await
                .unwrap(),
        )
        .await,
        403,
        "admin_disabled",
    );

    // WebSocket endpoints asked without an upgrade.
    assert_error(&s.get("/ws", Some(&alice)).await, 400, "not_websocket");

    // Nothing panicked: the server still answers.
    let (st, _) = s.get("/health", None).await;
    assert_eq!(st, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn http_writes_are_rate_limited_per_user() {
    // A burst of 3 and one more write every 100 s: nothing refills during the test.
    let s = start(&["--request-burst", "3", "--requests-per-second", "0.01"]).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let (st, room) = s
        .post(
            "/api/rooms",
            Some(&alice),
            json!({"name": "r", "kind": "public"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{room}");
    let room = room["room"]["id"].as_u64().unwrap();
    let path = format!("/api/rooms/{room}/messages");
    for i in 0..2 {
        let (st, body) = s
            .post(&path, Some(&alice), json!({"body": format!("m{i}")}))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{body}");
    }
    assert_error(
        &s.post(&path, Some(&alice), json!({"body": "one too many"}))
            .await,
        429,
        "rate_limited",
    );
    assert_error(
        &s.post(
            "/api/direct",
            Some(&alice),
            json!({"to": "bob", "body": "psst"}),
        )
        .await,
        429,
        "rate_limited",
    );
    // Before the body is read: a malformed one is refused the same way.
    let r = s
        .http
        .post(s.url(&path))
        .header("Cookie", alice.cookie())
        .header("Content-Type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_error(&decode(r).await, 429, "rate_limited");

    // Reads are not limited, and the refused posts were not stored.
    let (st, page) = s
        .get(&format!("/api/rooms/{room}/history"), Some(&alice))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(page["entries"].as_array().unwrap().len(), 2, "{page}");
    // Another user has a bucket of their own.
    let (st, _) = s
        .post(&format!("/api/rooms/{room}/join"), Some(&bob), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = s.post(&path, Some(&bob), json!({"body": "hi"})).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    // Without a token it is 401, not 429.
    assert_error(
        &s.post(&path, None, json!({"body": "x"})).await,
        401,
        "unauthenticated",
    );
    s.stop().await;
}

#[tokio::test]
async fn sign_in_attempts_are_rate_limited() {
    let s = start(&["--auth-attempts-per-minute", "2"]).await;
    let login = || {
        s.post(
            "/api/login",
            None,
            json!({"username": "x", "password": "wrong horse"}),
        )
    };
    assert_error(&login().await, 401, "invalid_credentials");
    assert_error(&login().await, 401, "invalid_credentials");
    let r = s
        .http
        .post(s.url("/api/login"))
        .json(&json!({"username": "x", "password": "wrong horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // Two a minute: the next attempt in about 30 s.
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    // The sign-in page's form says the same.
    let r = s
        .http
        .post(s.url("/auth"))
        .form(&[("username", "x"), ("password", "wrong horse")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    s.stop().await;
}
