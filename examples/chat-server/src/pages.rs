//! The HTML pages, rendered on the server with askama templates (`templates/`).
//!
//! Pages show state as it is when they load — a room page arrives with its latest history and
//! member list already in the HTML — and `assets/app.js` takes over from there: live
//! messages over the WebSocket, older history on scroll, typing, presence, read markers.

use crate::AppState;
use crate::api::{ApiPath, ApiQuery, readable_room};
use crate::assets::VERSION;
use crate::error::ApiError;
use crate::security::{CurrentUser, MaybeUser};
use askama::Template;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chat_core::protocol::Entry;
use chat_core::{HistoryQuery, RoomId, RoomKind, Seq, Timestamp};
use serde::Deserialize;

/// A rendered page with its status. Pages depend on the signed-in user, so none is cached.
fn page(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => {
            let mut r = (status, Html(html)).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response()
        }
    }
}

fn version() -> &'static str {
    VERSION.as_str()
}

/// Where to send someone after signing in: only paths on this site, never `//host` or
/// `https://…` (an open redirect would make our sign-in page a phishing tool). Only visible
/// ASCII is accepted: browsers drop tabs and newlines from a URL before parsing it, so
/// `/\t/evil.example` would become `//evil.example`, and treat `\` as `/`.
pub(crate) fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            n
        }
        _ => "/",
    }
}

fn sign_in_first(path: &str) -> Response {
    let to = format!("/auth?next={}", encode_component(path));
    Redirect::to(&to).into_response()
}

/// Percent-encodes everything but unreserved characters and `/`.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Sign-in
// ---------------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "auth.html")]
pub(crate) struct AuthPage<'a> {
    pub(crate) v: &'a str,
    pub(crate) me: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) notice: Option<String>,
    pub(crate) username: String,
    pub(crate) next: String,
    pub(crate) guests: bool,
    pub(crate) auto_register: bool,
}

impl AuthPage<'_> {
    pub(crate) fn new(app: &AppState, next: &str) -> AuthPage<'static> {
        AuthPage {
            v: version(),
            me: None,
            error: None,
            notice: None,
            username: String::new(),
            next: safe_next(Some(next)).to_string(),
            guests: app.settings.guests,
            auto_register: app.settings.auto_register,
        }
    }

    pub(crate) fn render_with(&self, status: StatusCode) -> Response {
        page(status, self)
    }
}

#[derive(Deserialize)]
pub(crate) struct NextParam {
    next: Option<String>,
}

/// `GET /auth`: the sign-in and registration form (or onwards, if already signed in).
pub(crate) async fn auth(
    State(app): State<AppState>,
    MaybeUser(user): MaybeUser,
    ApiQuery(q): ApiQuery<NextParam>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if user.is_some() {
        return Redirect::to(next).into_response();
    }
    let mut p = AuthPage::new(&app, next);
    if next.starts_with("/invite/") {
        p.notice = Some("Sign in or create an account to accept the invitation.".into());
    }
    p.render_with(StatusCode::OK)
}

// ---------------------------------------------------------------------------------------------
// Home
// ---------------------------------------------------------------------------------------------

pub(crate) struct RoomRow {
    id: RoomId,
    name: String,
    kind: &'static str,
    unread: u64,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage<'a> {
    v: &'a str,
    me: Option<String>,
    rooms: Vec<RoomRow>,
    public_rooms: Vec<RoomRow>,
}

fn kind_name(k: RoomKind) -> &'static str {
    match k {
        RoomKind::Direct => "direct",
        RoomKind::Group => "group",
        RoomKind::Public => "public",
    }
}

/// `GET /`: the user's rooms with unread counts, and forms to create a room, start a direct
/// conversation and join public rooms.
pub(crate) async fn home(State(app): State<AppState>, MaybeUser(user): MaybeUser) -> Response {
    let Some(user) = user else {
        return Redirect::to("/auth").into_response();
    };
    match home_page(&app, &user).await {
        Ok(r) => r,
        Err(e) => error_page(e, Some(&user)),
    }
}

async fn home_page(app: &AppState, user: &CurrentUser) -> Result<Response, ApiError> {
    let mine = app.engine.rooms(&user.identity).await?;
    let public = app.engine.public_rooms().await?;
    let rooms: Vec<RoomRow> = mine
        .iter()
        .map(|r| RoomRow {
            id: r.room.id,
            name: r.room.name.clone(),
            kind: kind_name(r.room.kind),
            unread: r.unread,
        })
        .collect();
    let public_rooms = public
        .into_iter()
        .filter(|p| !mine.iter().any(|m| m.room.id == p.room.id))
        .map(|r| RoomRow {
            id: r.room.id,
            name: r.room.name,
            kind: "public",
            unread: 0,
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        &HomePage {
            v: version(),
            me: Some(user.identity.username.clone()),
            rooms,
            public_rooms,
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// Room
// ---------------------------------------------------------------------------------------------

struct MessageRow {
    seq: Seq,
    at: i64,
    iso: String,
    time: String,
    sender: String,
    body: String,
    mine: bool,
    system: bool,
}

struct MemberRow {
    id: u64,
    name: String,
    role: &'static str,
    online: bool,
}

#[derive(Template)]
#[template(path = "room.html")]
struct RoomPage<'a> {
    v: &'a str,
    me: Option<String>,
    me_id: u64,
    id: RoomId,
    name: String,
    kind: &'static str,
    member: bool,
    can_invite: bool,
    entries: Vec<MessageRow>,
    latest_seq: u64,
    oldest_seq: u64,
    has_more: bool,
    members: Vec<MemberRow>,
}

/// `GET /chat/{id}`: a room with its latest history; live from then on.
pub(crate) async fn room(
    State(app): State<AppState>,
    MaybeUser(user): MaybeUser,
    ApiPath(id): ApiPath<String>,
) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return not_found(MaybeUser(user)).await;
    };
    let Some(user) = user else {
        return sign_in_first(&format!("/chat/{id}"));
    };
    match room_page(&app, &user, RoomId(id)).await {
        Ok(r) => r,
        Err(e) => error_page(e, Some(&user)),
    }
}

async fn room_page(app: &AppState, user: &CurrentUser, id: RoomId) -> Result<Response, ApiError> {
    let (room, role) = readable_room(app, user, id).await?;
    let page_size = app.engine.limits().default_history_page;
    let history = app
        .engine
        .history(
            &user.identity,
            id,
            HistoryQuery::Before(Seq(u64::MAX)),
            page_size,
        )
        .await?;
    let members = app.engine.members(&user.identity, id).await?;
    let entries: Vec<MessageRow> = history
        .entries
        .iter()
        .map(Entry::from)
        .map(|e| MessageRow {
            seq: e.seq,
            at: e.at.0,
            iso: iso8601(e.at),
            time: utc_hhmm(e.at),
            mine: e.sender == Some(user.identity.user),
            system: e.sender.is_none(),
            sender: e.sender_name,
            body: e.body,
        })
        .collect();
    let latest_seq = entries.last().map(|e| e.seq.0).unwrap_or(0);
    let oldest_seq = entries.first().map(|e| e.seq.0).unwrap_or(0);
    let member = role.is_some();
    Ok(page(
        StatusCode::OK,
        &RoomPage {
            v: version(),
            me: Some(user.identity.username.clone()),
            me_id: user.identity.user.0,
            id,
            name: room.name.clone(),
            kind: kind_name(room.kind),
            member,
            can_invite: member && room.kind != RoomKind::Direct,
            entries,
            latest_seq,
            oldest_seq,
            has_more: history.has_more,
            members: members
                .into_iter()
                .map(|m| MemberRow {
                    id: m.user.id.0,
                    name: m.user.username,
                    role: match m.role {
                        chat_core::Role::Owner => "owner",
                        chat_core::Role::Admin => "admin",
                        _ => "member",
                    },
                    online: m.online,
                })
                .collect(),
        },
    ))
}

/// `HH:MM` in UTC: what a page without JavaScript shows (the script shows local time).
fn utc_hhmm(t: Timestamp) -> String {
    let mins = t.0.div_euclid(60_000).rem_euclid(24 * 60);
    format!("{:02}:{:02}", mins / 60, mins % 60)
}

/// RFC 3339 in UTC, for `<time datetime>`.
fn iso8601(t: Timestamp) -> String {
    let secs = t.0.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------------
// Invites
// ---------------------------------------------------------------------------------------------

/// `GET /invite/{code}`: joins the room and opens it; an unknown, expired or used-up code gets
/// a page that says which, and what to do.
pub(crate) async fn invite(
    State(app): State<AppState>,
    MaybeUser(user): MaybeUser,
    ApiPath(code): ApiPath<String>,
) -> Response {
    let Some(user) = user else {
        return sign_in_first(&format!("/invite/{code}"));
    };
    match app.engine.redeem_invite(&user.identity, &code).await {
        Ok(room) => {
            tracing::info!(user = %user.identity.username, room = %room.id, "invite redeemed");
            Redirect::to(&format!("/chat/{}", room.id)).into_response()
        }
        Err(e) => {
            let (status, title, text) = match &e {
                chat_core::Error::InviteUnknown => (
                    StatusCode::NOT_FOUND,
                    "Invite not found",
                    "This invite link is not valid: it may be mistyped, or its room was deleted. \
                     Ask the person who sent it for a new link."
                        .to_string(),
                ),
                chat_core::Error::InviteExpired => (
                    StatusCode::GONE,
                    "Invite expired",
                    match app.engine.store().invite(&code).await {
                        Ok(Some(i)) => format!(
                            "This invite link expired on {} (UTC). Invite links are valid for a \
                             limited time; ask a member of the room for a new one.",
                            iso8601(i.expires_at)
                                .replace('T', " ")
                                .trim_end_matches('Z')
                        ),
                        _ => {
                            "This invite link has expired. Ask a member of the room for a new one."
                                .to_string()
                        }
                    },
                ),
                chat_core::Error::InviteExhausted => (
                    StatusCode::GONE,
                    "Invite used up",
                    "This invite link has already been used as many times as it allows. Ask a \
                     member of the room for a new one."
                        .to_string(),
                ),
                _ => return error_page(e.into(), Some(&user)),
            };
            message_page(status, Some(&user), title, &text)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Messages and errors
// ---------------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    v: &'a str,
    me: Option<String>,
    title: &'a str,
    text: &'a str,
    link: &'a str,
    link_text: &'a str,
}

fn message_page(
    status: StatusCode,
    user: Option<&CurrentUser>,
    title: &str,
    text: &str,
) -> Response {
    page(
        status,
        &MessagePage {
            v: version(),
            me: user.map(|u| u.identity.username.clone()),
            title,
            text,
            link: "/",
            link_text: "Back to your rooms",
        },
    )
}

/// An API error as a page: the same status, in words.
fn error_page(e: ApiError, user: Option<&CurrentUser>) -> Response {
    let title = match e.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::UNAUTHORIZED => "Please sign in",
        s if s.is_server_error() => "Something went wrong",
        _ => "That did not work",
    };
    let text = match e.code.as_ref() {
        "not_member" => {
            "You are not a member of this room. Ask a member for an invite link.".to_string()
        }
        "room_not_found" => "This room does not exist, or it was deleted.".to_string(),
        _ => e.message.clone(),
    };
    message_page(e.status, user, title, &text)
}

/// Unknown pages.
pub(crate) async fn not_found(MaybeUser(user): MaybeUser) -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        user.as_ref(),
        "Not found",
        "There is no page at this address.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/chat/1")), "/chat/1");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        for sneaky in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r/x",
            "/ /x",
            "/é",
        ] {
            assert_eq!(safe_next(Some(sneaky)), "/", "{sneaky:?}");
        }
        assert_eq!(safe_next(Some("/chat/1?x=%2F%2F#y")), "/chat/1?x=%2F%2F#y");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn times() {
        assert_eq!(iso8601(Timestamp(0)), "1970-01-01T00:00:00Z");
        assert_eq!(
            iso8601(Timestamp(1_767_225_600_000)),
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(iso8601(Timestamp(951_827_696_000)), "2000-02-29T12:34:56Z");
        assert_eq!(utc_hhmm(Timestamp(951_827_696_000)), "12:34");
    }
}
