//! The JSON API under `/api/`: everything the pages do, for scripts and other clients.
//! Documented with curl examples in `docs/API.md`.
//!
//! Each handler is the same three steps: extract (authentication and input, with every
//! rejection a JSON error), one engine call, a JSON answer. The rules — who may read, post,
//! invite — are the engine's, so the API and the WebSocket protocol cannot disagree.

use crate::AppState;
use crate::error::ApiError;
use crate::security::{CurrentUser, Writer, clear_cookie, session_cookie};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chat_core::protocol::{Entry, RoomInfo, UserInfo};
use chat_core::{Author, HistoryQuery, Invite, RoomId, Seq, Timestamp, User};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Extractors whose rejections are JSON errors
// ---------------------------------------------------------------------------------------------

/// A JSON body. Malformed JSON and missing or mistyped fields are 400, a missing
/// `Content-Type: application/json` is 415 (which also keeps plain HTML forms on other sites
/// from reaching the API), and a body over the limit is 413.
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(ApiError::from(e)),
        }
    }
}

/// A JSON body that may also be absent (an empty body means all defaults).
pub(crate) struct JsonOrEmpty<T>(pub(crate) T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for JsonOrEmpty<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let has_body = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v != "0")
            || req.headers().contains_key(header::TRANSFER_ENCODING);
        if !has_body {
            return Ok(JsonOrEmpty(T::default()));
        }
        let r: Result<axum::Json<T>, JsonRejection> = axum::Json::from_request(req, state).await;
        r.map(|axum::Json(v)| JsonOrEmpty(v)).map_err(Into::into)
    }
}

/// Path parameters; a non-number where an id belongs is 400.
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(Into::into)
    }
}

/// Query parameters; a malformed one is 400.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(Into::into)
    }
}

fn json(status: StatusCode, body: Value) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn user_json(u: &User) -> Value {
    json!(UserInfo {
        id: u.id,
        username: u.username.clone()
    })
}

// ---------------------------------------------------------------------------------------------
// Accounts and sign-in
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) password: String,
}

/// Register or sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignIn {
    Login,
    Register,
}

/// Signs a user in (or registers them), under the per-address attempt limit and the cap on
/// concurrent password hashes. With `--auto-register`, signing in with an unknown username
/// creates the account.
pub(crate) async fn sign_in(
    app: &AppState,
    ip: std::net::IpAddr,
    mode: SignIn,
    username: &str,
    password: &str,
) -> Result<(User, chat_core::Token), ApiError> {
    app.auth_limiter.check(ip)?;
    // The semaphore lives as long as the server, so acquiring cannot fail.
    let _permit = app.hashing.acquire().await.ok();
    let accounts = app.engine.accounts();
    let register = || async {
        let user = accounts.register(username, password).await?;
        tracing::info!(user = %user.username, "account created");
        let token = accounts.issue_token(user.id).await?;
        Ok::<_, chat_core::Error>((user, token))
    };
    let result = match mode {
        SignIn::Register => register().await,
        SignIn::Login => match accounts.login(username, password).await {
            Err(chat_core::Error::InvalidCredentials) if app.settings.auto_register => {
                match register().await {
                    // The name exists: it was the password that was wrong.
                    Err(chat_core::Error::AlreadyExists(_)) => {
                        Err(chat_core::Error::InvalidCredentials)
                    }
                    other => other,
                }
            }
            other => other,
        },
    };
    Ok(result?)
}

/// The JSON answer to a successful sign-in, with the cookie that keeps the browser signed in.
/// The token is also in the body, for clients that send it as a bearer token instead.
pub(crate) fn signed_in(
    app: &AppState,
    status: StatusCode,
    user: &User,
    token: &chat_core::Token,
) -> Response {
    let expires_at = Timestamp::now().plus(crate::Config::SESSION_TTL);
    let mut r = json(
        status,
        json!({ "user": user_json(user), "token": token.as_str(), "expires_at": expires_at }),
    );
    r.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(token.as_str(), app.settings.secure_cookies),
    );
    r
}

/// `POST /api/register` `{username, password}` → 201 `{user, token, expires_at}` + cookie.
pub(crate) async fn register(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(c): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    let ip = peer.ip();
    let (user, token) = sign_in(&app, ip, SignIn::Register, &c.username, &c.password).await?;
    Ok(signed_in(&app, StatusCode::CREATED, &user, &token))
}

/// `POST /api/login` `{username, password}` → 200 `{user, token, expires_at}` + cookie.
pub(crate) async fn login(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(c): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    let ip = peer.ip();
    let (user, token) = sign_in(&app, ip, SignIn::Login, &c.username, &c.password).await?;
    Ok(signed_in(&app, StatusCode::OK, &user, &token))
}

#[derive(Deserialize)]
pub(crate) struct GuestReq {
    username: String,
}

/// `POST /api/guest` `{username}` → 200 `{user, token, expires_at}` + cookie, where guests
/// are enabled (`--guests`); 403 otherwise.
pub(crate) async fn guest(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(g): ApiJson<GuestReq>,
) -> Result<Response, ApiError> {
    let (user, token) = guest_sign_in(&app, peer.ip(), &g.username).await?;
    Ok(signed_in(&app, StatusCode::OK, &user, &token))
}

pub(crate) async fn guest_sign_in(
    app: &AppState,
    ip: std::net::IpAddr,
    name: &str,
) -> Result<(User, chat_core::Token), ApiError> {
    app.auth_limiter.check(ip)?;
    let accounts = app.engine.accounts();
    let user = accounts.guest(name).await?;
    let token = accounts.issue_token(user.id).await?;
    Ok((user, token))
}

/// Revokes the token and closes every socket opened with it.
pub(crate) async fn sign_out(app: &AppState, user: &CurrentUser) -> Result<(), ApiError> {
    app.engine.logout(&user.token).await?;
    tracing::info!(user = %user.identity.username, "signed out");
    Ok(())
}

/// `POST /api/logout` → 204; the token is revoked, its WebSockets closed (4401), the cookie
/// cleared.
pub(crate) async fn logout(
    State(app): State<AppState>,
    user: CurrentUser,
) -> Result<Response, ApiError> {
    sign_out(&app, &user).await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        clear_cookie(app.settings.secure_cookies),
    );
    Ok(r)
}

/// `GET /api/me` → `{id, username}`.
pub(crate) async fn me(user: CurrentUser) -> Response {
    json(
        StatusCode::OK,
        json!(UserInfo {
            id: user.identity.user,
            username: user.identity.username
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Rooms
// ---------------------------------------------------------------------------------------------

/// `GET /api/rooms` → `{rooms: [{room, role, latest_seq, unread}]}`.
pub(crate) async fn rooms(
    State(app): State<AppState>,
    user: CurrentUser,
) -> Result<Response, ApiError> {
    let rooms = app.engine.rooms(&user.identity).await?;
    Ok(json(StatusCode::OK, json!({ "rooms": rooms })))
}

/// `GET /api/rooms/public` → `{rooms: [...]}` (role `null`, unread 0).
pub(crate) async fn public_rooms(
    State(app): State<AppState>,
    _user: CurrentUser,
) -> Result<Response, ApiError> {
    let rooms = app.engine.public_rooms().await?;
    Ok(json(StatusCode::OK, json!({ "rooms": rooms })))
}

#[derive(Deserialize)]
pub(crate) struct CreateRoom {
    name: String,
    #[serde(default)]
    kind: Option<chat_core::RoomKind>,
}

/// `POST /api/rooms` `{name, kind?}` (`group`, the default, or `public`) → 201 `{room}`.
pub(crate) async fn create_room(
    State(app): State<AppState>,
    Writer(user): Writer,
    ApiJson(req): ApiJson<CreateRoom>,
) -> Result<Response, ApiError> {
    let kind = req.kind.unwrap_or(chat_core::RoomKind::Group);
    let room = app
        .engine
        .create_room(&user.identity, &req.name, kind)
        .await?;
    Ok(json(
        StatusCode::CREATED,
        json!({ "room": RoomInfo::from(&room) }),
    ))
}

/// The room if the user may read it: 404 for an unknown room, 403 for a group or direct room
/// they are not a member of.
pub(crate) async fn readable_room(
    app: &AppState,
    user: &CurrentUser,
    room: RoomId,
) -> Result<(chat_core::Room, Option<chat_core::Role>), ApiError> {
    let r = app
        .engine
        .store()
        .room(room)
        .await?
        .ok_or(chat_core::Error::RoomNotFound(room))?;
    let role = app
        .engine
        .store()
        .member(room, user.identity.user)
        .await?
        .map(|m| m.role);
    if role.is_none() && r.kind != chat_core::RoomKind::Public {
        return Err(chat_core::Error::NotMember(room).into());
    }
    Ok((r, role))
}

/// `GET /api/rooms/{id}` → `{room, role}` (`role` is `null` in a public room you have not
/// joined).
pub(crate) async fn room(
    State(app): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> Result<Response, ApiError> {
    let (room, role) = readable_room(&app, &user, RoomId(id)).await?;
    Ok(json(
        StatusCode::OK,
        json!({ "room": RoomInfo::from(&room), "role": role }),
    ))
}

/// `POST /api/rooms/{id}/join` → `{room}` (public rooms only).
pub(crate) async fn join(
    State(app): State<AppState>,
    Writer(user): Writer,
    ApiPath(id): ApiPath<u64>,
) -> Result<Response, ApiError> {
    let room = app.engine.join(&user.identity, RoomId(id)).await?;
    Ok(json(
        StatusCode::OK,
        json!({ "room": RoomInfo::from(&room) }),
    ))
}

/// `POST /api/rooms/{id}/leave` → 204.
pub(crate) async fn leave(
    State(app): State<AppState>,
    Writer(user): Writer,
    ApiPath(id): ApiPath<u64>,
) -> Result<Response, ApiError> {
    app.engine.leave(&user.identity, RoomId(id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub(crate) struct HistoryParams {
    before: Option<u64>,
    after: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/rooms/{id}/history?before=&after=&limit=` → `{room, entries, has_more}`.
pub(crate) async fn history(
    State(app): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<u64>,
    ApiQuery(p): ApiQuery<HistoryParams>,
) -> Result<Response, ApiError> {
    let query = match (p.before, p.after) {
        (Some(_), Some(_)) => {
            return Err(
                chat_core::Error::invalid("before", "give before or after, not both").into(),
            );
        }
        (Some(b), None) => HistoryQuery::Before(Seq(b)),
        (None, Some(a)) => HistoryQuery::After(Seq(a)),
        (None, None) => HistoryQuery::Before(Seq(u64::MAX)),
    };
    let limit = p.limit.unwrap_or(app.engine.limits().default_history_page);
    let page = app
        .engine
        .history(&user.identity, RoomId(id), query, limit)
        .await?;
    let entries: Vec<Entry> = page.entries.iter().map(Entry::from).collect();
    Ok(json(
        StatusCode::OK,
        json!({ "room": id, "entries": entries, "has_more": page.has_more }),
    ))
}

/// `GET /api/rooms/{id}/members` → `{room, members: [{user, role, online}]}`.
pub(crate) async fn members(
    State(app): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> Result<Response, ApiError> {
    let members = app.engine.members(&user.identity, RoomId(id)).await?;
    Ok(json(
        StatusCode::OK,
        json!({ "room": id, "members": members }),
    ))
}

#[derive(Deserialize)]
pub(crate) struct SendReq {
    body: String,
    #[serde(default)]
    client_msg_id: Option<String>,
}

/// `POST /api/rooms/{id}/messages` `{body, client_msg_id?}` → 201 `{room, seq, duplicate}`
/// once stored; delivered live to every subscriber.
pub(crate) async fn send(
    State(app): State<AppState>,
    Writer(user): Writer,
    ApiPath(id): ApiPath<u64>,
    ApiJson(req): ApiJson<SendReq>,
) -> Result<Response, ApiError> {
    let a = app
        .engine
        .publish(
            Author::User(user.identity),
            RoomId(id),
            req.body,
            req.client_msg_id,
        )
        .await?;
    Ok(json(
        StatusCode::CREATED,
        json!({ "room": a.entry.room, "seq": a.entry.seq, "duplicate": a.duplicate }),
    ))
}

#[derive(Deserialize)]
pub(crate) struct MarkRead {
    seq: u64,
}

/// `POST /api/rooms/{id}/read` `{seq}` → `{room, read_seq, latest_seq, unread}`.
pub(crate) async fn mark_read(
    State(app): State<AppState>,
    Writer(user): Writer,
    ApiPath(id): ApiPath<u64>,
    ApiJson(req): ApiJson<MarkRead>,
) -> Result<Response, ApiError> {
    let u = app
        .engine
        .mark_read(&user.identity, RoomId(id), Seq(req.seq))
        .await?;
    Ok(json(StatusCode::OK, json!(u)))
}

// ---------------------------------------------------------------------------------------------
// Invites
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
pub(crate) struct InviteReq {
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    max_uses: Option<u32>,
}

/// An invite as the API shows it, with the relative link to share.
pub(crate) fn invite_json(i: &Invite) -> Value {
    json!({
        "code": i.code,
        "url": format!("/invite/{}", i.code),
        "room": i.room,
        "expires_at": i.expires_at,
        "max_uses": i.max_uses,
        "uses": i.uses,
    })
}

pub(crate) async fn make_invite(
    app: &AppState,
    user: &CurrentUser,
    room: RoomId,
    req: InviteReq,
) -> Result<Invite, ApiError> {
    let invite = app
        .engine
        .create_invite(
            &user.identity,
            room,
            req.ttl_secs.map(Duration::from_secs),
            req.max_uses,
        )
        .await?;
    Ok(invite)
}

/// `POST /api/rooms/{id}/invites` `{ttl_secs?, max_uses?}` (body optional; 7 days and
/// unlimited by default) → 201 `{code, url, room, expires_at, max_uses, uses}`.
pub(crate) async fn create_invite(
    State(app): State<AppState>,
    Writer(user): Writer,
    ApiPath(id): ApiPath<u64>,
    JsonOrEmpty(req): JsonOrEmpty<InviteReq>,
) -> Result<Response, ApiError> {
    let invite = make_invite(&app, &user, RoomId(id), req).await?;
    Ok(json(StatusCode::CREATED, invite_json(&invite)))
}

/// `GET /api/invites/{code}` → the invite and its room's name, so a client can ask "join
/// *room*?" before redeeming. 404 unknown, 410 expired or used up.
pub(crate) async fn invite(
    State(app): State<AppState>,
    _user: CurrentUser,
    ApiPath(code): ApiPath<String>,
) -> Result<Response, ApiError> {
    let store = app.engine.store();
    let invite = store
        .invite(&code)
        .await?
        .ok_or(chat_core::Error::InviteUnknown)?;
    let room = store
        .room(invite.room)
        .await?
        .ok_or(chat_core::Error::InviteUnknown)?;
    if invite.expires_at <= Timestamp::now() {
        return Err(chat_core::Error::InviteExpired.into());
    }
    if invite.max_uses.is_some_and(|m| invite.uses >= m) {
        return Err(chat_core::Error::InviteExhausted.into());
    }
    let mut body = invite_json(&invite);
    body["room_info"] = json!(RoomInfo::from(&room));
    Ok(json(StatusCode::OK, body))
}

/// `POST /api/invites/{code}/redeem` → `{room}`: joins the room.
pub(crate) async fn redeem_invite(
    State(app): State<AppState>,
    Writer(user): Writer,
    ApiPath(code): ApiPath<String>,
) -> Result<Response, ApiError> {
    let room = app.engine.redeem_invite(&user.identity, &code).await?;
    Ok(json(
        StatusCode::OK,
        json!({ "room": RoomInfo::from(&room) }),
    ))
}

// ---------------------------------------------------------------------------------------------
// Direct messages
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
pub(crate) struct DirectReq {
    to: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    client_msg_id: Option<String>,
}

/// `POST /api/direct` `{to, body?, client_msg_id?}` → `{room, sent}`: the direct room with
/// `to` (created on first use), and with a `body`, the message sent into it (`sent` is
/// `{seq, duplicate}`, or `null` without a body).
pub(crate) async fn direct(
    State(app): State<AppState>,
    Writer(user): Writer,
    ApiJson(req): ApiJson<DirectReq>,
) -> Result<Response, ApiError> {
    let (room, sent) = match req.body {
        Some(body) => {
            let a = app
                .engine
                .send_direct(&user.identity, &req.to, body, req.client_msg_id)
                .await?;
            let room = app
                .engine
                .store()
                .room(a.entry.room)
                .await?
                .ok_or(chat_core::Error::RoomNotFound(a.entry.room))?;
            (
                room,
                json!({ "seq": a.entry.seq, "duplicate": a.duplicate }),
            )
        }
        None => (
            app.engine.direct_room(&user.identity, &req.to).await?,
            Value::Null,
        ),
    };
    Ok(json(
        StatusCode::OK,
        json!({ "room": RoomInfo::from(&room), "sent": sent }),
    ))
}

// ---------------------------------------------------------------------------------------------
// Admin
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
pub(crate) struct PublishReq {
    body: String,
    #[serde(default)]
    room: Option<u64>,
    #[serde(default)]
    username: Option<String>,
}

/// `POST /api/admin/publish` with `Authorization: Bearer <admin token>`:
/// - `{room, body}` posts a stored message as `system` into the room → 201 `{room, seq}`;
/// - `{username, body}` sends a notice (not stored) to that user's live sessions → 200
///   `{delivered}` (sessions on this node).
///
/// The token is checked before the body is read, so whoever has no token learns nothing
/// about the body's rules (and costs no JSON parsing).
pub(crate) async fn admin_publish(
    State(app): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    check_admin(&app, req.headers())?;
    let ApiJson(req) = ApiJson::<PublishReq>::from_request(req, &app).await?;
    match (req.room, req.username) {
        (Some(room), None) => {
            let a = app
                .engine
                .publish(Author::System, RoomId(room), req.body, None)
                .await?;
            tracing::info!(room, seq = %a.entry.seq, "admin published a system message");
            Ok(json(
                StatusCode::CREATED,
                json!({ "room": a.entry.room, "seq": a.entry.seq }),
            ))
        }
        (None, Some(username)) => {
            chat_core::validate::body(&req.body, app.engine.limits())?;
            let user = app
                .engine
                .store()
                .credentials(&username)
                .await?
                .ok_or(chat_core::Error::UserNotFound(username))?
                .user;
            let delivered = app.engine.notify_user(user.id, None, req.body).await;
            Ok(json(StatusCode::OK, json!({ "delivered": delivered })))
        }
        _ => Err(chat_core::Error::invalid("room", "give exactly one of room and username").into()),
    }
}

fn check_admin(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &app.settings.admin_token_hash else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the admin API is disabled; start the server with --admin-token",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match presented {
        Some(t) if chat_core::auth::hash_token(t) == *expected => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "wrong admin token",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send the admin token as \"Authorization: Bearer <token>\"",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Fallbacks
// ---------------------------------------------------------------------------------------------

/// Unknown `/api/` paths: a JSON 404, not the HTML one.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such API endpoint; see docs/API.md")
}

/// A known path with the wrong method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not accept that method",
    )
}
