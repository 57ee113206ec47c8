//! Routes of the web chat this server replaces, kept working with their old paths and shapes:
//! `POST /auth`, `POST /logout`, `POST /newchat`, `POST /create_invite/{chat_id}` (the rest —
//! `GET /`, `GET /auth`, `GET /chat/{id}`, `GET /invite/{code}`, `GET /chatsocket/{id}`,
//! `GET /status` — are pages or endpoints in their own right).
//!
//! `POST /auth` and `POST /logout` serve both the HTML form (answered with a redirect) and
//! JSON clients (answered with JSON), told apart by the request's `Content-Type`.

use crate::AppState;
use crate::api::{self, ApiJson, ApiPath, InviteReq, JsonOrEmpty, SignIn, invite_json};
use crate::error::ApiError;
use crate::pages::{AuthPage, safe_next};
use crate::security::{MaybeUser, Writer, clear_cookie, session_cookie};
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chat_core::RoomKind;
use chat_core::protocol::RoomInfo;
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"))
}

#[derive(Deserialize)]
pub(crate) struct AuthForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    /// `login` (the default), `register` or `guest`.
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /auth`: sign in, register (`action=register`) or continue as a guest
/// (`action=guest`). A form gets a redirect to `next` with the session cookie, or the form
/// again with the error; JSON (`{username, password, action?}`) gets the API's answer.
pub(crate) async fn auth(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let json = is_json(req.headers());
    let form = if json {
        match ApiJson::<AuthForm>::from_request(req, &app).await {
            Ok(ApiJson(f)) => f,
            Err(e) => return e.into_response(),
        }
    } else {
        match axum::Form::<AuthForm>::from_request(req, &app).await {
            Ok(axum::Form(f)) => f,
            Err(e) => return ApiError::from(e).into_response(),
        }
    };
    let ip = peer.ip();
    let action = form.action.as_deref().unwrap_or("login");
    let result = match action {
        "login" => api::sign_in(&app, ip, SignIn::Login, &form.username, &form.password).await,
        "register" => {
            api::sign_in(&app, ip, SignIn::Register, &form.username, &form.password).await
        }
        "guest" => api::guest_sign_in(&app, ip, &form.username).await,
        _ => Err(ApiError::bad_request(
            "action must be \"login\", \"register\" or \"guest\"",
        )),
    };
    let status = if action == "register" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    match (result, json) {
        (Ok((user, token)), true) => api::signed_in(&app, status, &user, &token),
        (Err(e), true) => e.into_response(),
        (Ok((user, token)), false) => {
            tracing::info!(user = %user.username, "signed in");
            let mut r = Redirect::to(safe_next(form.next.as_deref())).into_response();
            r.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(token.as_str(), app.settings.secure_cookies),
            );
            r
        }
        (Err(e), false) => {
            let mut p = AuthPage::new(&app, form.next.as_deref().unwrap_or("/"));
            p.username = form.username;
            p.error = Some(match e.code.as_ref() {
                "invalid_credentials" => "Wrong username or password.".to_string(),
                "already_exists" => "That username is taken; choose another.".to_string(),
                _ => e.message.clone(),
            });
            let mut r = p.render_with(e.status);
            e.set_retry_after(r.headers_mut());
            r
        }
    }
}

/// `POST /logout`: revokes the session's token (its WebSockets close with 4401 `revoked`),
/// clears the cookie, and goes to the sign-in page (a form) or answers `{"ok": true}` (JSON).
pub(crate) async fn logout(
    State(app): State<AppState>,
    MaybeUser(user): MaybeUser,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(user) = &user {
        api::sign_out(&app, user).await?;
    }
    let mut r = if is_json(&headers) {
        axum::Json(json!({ "ok": true })).into_response()
    } else {
        Redirect::to("/auth").into_response()
    };
    r.headers_mut().insert(
        header::SET_COOKIE,
        clear_cookie(app.settings.secure_cookies),
    );
    Ok(r)
}

#[derive(Deserialize)]
pub(crate) struct NewChat {
    chat_name: String,
}

/// `POST /newchat` `{chat_name}` → `{chat_id, id, name, kind, url}`: a new group room (joined
/// by invite), owned by the caller.
pub(crate) async fn newchat(
    State(app): State<AppState>,
    Writer(user): Writer,
    ApiJson(req): ApiJson<NewChat>,
) -> Result<Response, ApiError> {
    let room = app
        .engine
        .create_room(&user.identity, &req.chat_name, RoomKind::Group)
        .await?;
    let info = RoomInfo::from(&room);
    Ok(axum::Json(json!({
        "chat_id": room.id,
        "id": room.id,
        "name": info.name,
        "kind": info.kind,
        "url": format!("/chat/{}", room.id),
    }))
    .into_response())
}

/// `POST /create_invite/{chat_id}` → `{code, url, room, expires_at, max_uses, uses}`: an
/// invite valid for 7 days (a JSON body `{ttl_secs, max_uses}` may change that).
pub(crate) async fn create_invite(
    State(app): State<AppState>,
    Writer(user): Writer,
    ApiPath(chat_id): ApiPath<u64>,
    JsonOrEmpty(req): JsonOrEmpty<InviteReq>,
) -> Result<Response, ApiError> {
    let invite = api::make_invite(&app, &user, chat_core::RoomId(chat_id), req).await?;
    Ok(axum::Json(invite_json(&invite)).into_response())
}
