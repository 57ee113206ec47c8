//! Who is asking, and whether to believe the request came from our own pages.
//!
//! - [`CurrentUser`]: the signed-in user, from the session cookie (browsers) or an
//!   `Authorization: Bearer` token (API clients). Both carry a token from
//!   `Accounts::login`, checked by the engine, so revoking it (logout) ends both.
//! - [`csrf_guard`]: every POST from a browser must come from this server's own origin (or an
//!   origin the operator allowed). `SameSite=Lax` already keeps the cookie off cross-site
//!   POSTs in current browsers; the `Origin` / `Sec-Fetch-Site` check does not depend on the
//!   browser's cookie policy, and also covers same-site (sibling subdomain) attackers, which
//!   SameSite does not.
//! - [`AuthLimiter`]: sign-in attempts per client address, because each one costs an argon2
//!   hash (tens of milliseconds and 19 MiB) by design. One budget for HTTP and TCP sign-ins:
//!   it is also the TCP transport's `SignInGate`.

use crate::AppState;
use crate::config::Config;
use crate::error::ApiError;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chat_core::Identity;
use chat_core::ratelimit::TokenBucket;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The session cookie. The same name transport-ws reads by default, so the WebSocket
/// handshake is authenticated by the very cookie the sign-in set.
pub(crate) const COOKIE: &str = "chat_token";

/// The signed-in user of a request, and the token that proved it.
#[derive(Debug, Clone)]
pub(crate) struct CurrentUser {
    pub(crate) identity: Identity,
    pub(crate) token: String,
}

/// The token a request presents: `Authorization: Bearer` first, then the cookie.
pub(crate) fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some((scheme, token)) = v.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
                return Some(token.trim().to_string());
            }
        }
    }
    cookie(headers, COOKIE)
}

/// A cookie's value from the `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        MaybeUser::from_request_parts(parts, app)
            .await?
            .0
            .ok_or_else(ApiError::unauthenticated)
    }
}

/// The signed-in user if there is one; pages use it to choose between their content and the
/// sign-in page. An invalid or expired token counts as signed out.
#[derive(Debug, Clone)]
pub(crate) struct MaybeUser(pub(crate) Option<CurrentUser>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        if let Some(user) = parts.extensions.get::<CurrentUser>() {
            return Ok(MaybeUser(Some(user.clone())));
        }
        let Some(token) = presented_token(&parts.headers) else {
            return Ok(MaybeUser(None));
        };
        match app.engine.accounts().verify_token(&token).await {
            Ok(identity) => {
                let user = CurrentUser { identity, token };
                // Several extractors in one handler verify once.
                parts.extensions.insert(user.clone());
                Ok(MaybeUser(Some(user)))
            }
            Err(chat_core::Error::InvalidToken) => Ok(MaybeUser(None)),
            Err(e) => Err(e.into()),
        }
    }
}

/// The `Set-Cookie` value that signs a browser in for [`Config::SESSION_TTL`].
pub(crate) fn session_cookie(token: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        Config::SESSION_TTL.as_secs()
    );
    // Tokens are URL-safe base64, so this is always a valid header value.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `Set-Cookie` value that signs a browser out.
pub(crate) fn clear_cookie(secure: bool) -> HeaderValue {
    if secure {
        HeaderValue::from_static("chat_token=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0; Secure")
    } else {
        HeaderValue::from_static("chat_token=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
    }
}

/// Refuses state-changing requests that a browser made on behalf of another site.
///
/// Safe methods pass (no GET handler changes anything except `/invite/{code}`, whose whole
/// point is to be followed from anywhere). For the others:
/// - `Sec-Fetch-Site: cross-site` or `same-site` passes only with an explicitly allowed
///   `Origin`;
/// - an `Origin` must be this server's own (its host equals `Host`) or an allowed one;
///   `Origin: null` (sandboxed frames, some redirects) never passes;
/// - a request with neither header is not from a browser (curl, scripts), and a non-browser
///   client holding a cookie or token is its owner, not a confused deputy.
pub(crate) async fn csrf_guard(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return next.run(req).await;
    }
    match cross_site_verdict(req.headers(), &app.settings.origins) {
        Ok(()) => next.run(req).await,
        Err(why) => {
            tracing::info!(method = %req.method(), path = req.uri().path(), why, "cross-site request refused");
            ApiError::new(StatusCode::FORBIDDEN, "cross_site_request", why).into_response()
        }
    }
}

fn cross_site_verdict(
    headers: &HeaderMap,
    origins: &transport_ws::OriginPolicy,
) -> Result<(), &'static str> {
    let one = |name: header::HeaderName| -> Result<Option<&str>, &'static str> {
        let mut all = headers.get_all(name).iter();
        let first = all.next();
        if all.next().is_some() {
            return Err("duplicate Origin or Sec-Fetch-Site header");
        }
        first
            .map(|v| v.to_str().map_err(|_| "unreadable Origin header"))
            .transpose()
    };
    let origin = one(header::ORIGIN)?;
    let fetch_site = one(header::HeaderName::from_static("sec-fetch-site"))?;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let explicitly_allowed = |o: &str| {
        origins
            .allowed
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o.trim()))
    };
    match fetch_site.map(str::to_ascii_lowercase).as_deref() {
        Some("cross-site" | "same-site") => {
            return match origin {
                Some(o) if explicitly_allowed(o) => Ok(()),
                _ => Err("this request came from another site"),
            };
        }
        Some("same-origin" | "none") | None => {}
        Some(_) => return Err("unknown Sec-Fetch-Site value"),
    }
    match origin {
        None => Ok(()),
        Some(o) if origins.allows(Some(o), host) => Ok(()),
        Some(_) => Err("this request came from another origin"),
    }
}

/// Sign-in attempts per client address: a token bucket each, with a burst of a minute's worth
/// refilled over a minute. A bucket untouched for a minute is full again, which is the same as
/// having none, so those are forgotten when the map grows: its size is bounded by the number
/// of addresses that tried within the last minute.
#[derive(Debug)]
pub(crate) struct AuthLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<IpAddr, (TokenBucket, Instant)>>,
}

/// Past this many tracked addresses, idle ones are pruned.
const MAX_TRACKED: usize = 10_000;
const REFILL: Duration = Duration::from_secs(60);

impl AuthLimiter {
    pub(crate) fn new(per_minute: u32) -> AuthLimiter {
        AuthLimiter {
            per_minute: f64::from(per_minute),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one attempt for `ip`, or refuses with 429.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), ApiError> {
        if self.try_take(ip) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many sign-in attempts from your address; wait a minute",
            ))
        }
    }

    /// Takes one attempt for `ip`; `false` if its budget is spent.
    pub(crate) fn try_take(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, (_, last)| now.duration_since(*last) < REFILL);
            if buckets.len() >= MAX_TRACKED {
                // Ten thousand addresses within a minute: forget rather than grow.
                buckets.clear();
            }
        }
        let (bucket, last) = buckets.entry(ip).or_insert_with(|| {
            (
                TokenBucket::new(self.per_minute / REFILL.as_secs_f64(), self.per_minute),
                now,
            )
        });
        *last = now;
        bucket.try_take()
    }
}

/// The TCP transport's sign-ins (binary `hello` with a login or guest name, line-mode
/// `/login` and `/nick`) take from the same per-address budget as the HTTP ones, so that
/// reconnecting over TCP is no way around it.
impl transport_tcp::SignInGate for AuthLimiter {
    fn admit(&self, peer: IpAddr) -> bool {
        self.try_take(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cross_site_rules() {
        let mut p = transport_ws::OriginPolicy::default();
        p.allowed = vec!["https://app.example.com".into()];
        let v = |pairs: &[(&'static str, &'static str)]| cross_site_verdict(&headers(pairs), &p);
        assert!(v(&[]).is_ok(), "non-browser clients pass");
        assert!(
            v(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080")
            ])
            .is_ok()
        );
        assert!(
            v(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080"),
                ("sec-fetch-site", "same-origin")
            ])
            .is_ok()
        );
        assert!(
            v(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "https://evil.example")
            ])
            .is_err()
        );
        assert!(
            v(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "cross-site")
            ])
            .is_err()
        );
        assert!(v(&[("sec-fetch-site", "cross-site")]).is_err());
        assert!(v(&[("host", "x"), ("origin", "null")]).is_err());
        assert!(
            v(&[
                ("host", "x"),
                ("origin", "https://app.example.com"),
                ("sec-fetch-site", "cross-site")
            ])
            .is_ok()
        );
        assert!(
            v(&[
                ("host", "x"),
                ("origin", "http://x"),
                ("origin", "http://x")
            ])
            .is_err()
        );
    }

    #[test]
    fn cookies_are_found_among_others() {
        let h = headers(&[("cookie", "a=1; chat_token=abc; b=2")]);
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers(&[("cookie", "chat_token=")]), COOKIE), None);
        let h = headers(&[("authorization", "Bearer t1"), ("cookie", "chat_token=t2")]);
        assert_eq!(presented_token(&h).as_deref(), Some("t1"));
    }

    #[tokio::test(start_paused = true)]
    async fn sign_in_attempts_are_limited_per_address() {
        let l = AuthLimiter::new(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.check(a).is_ok() && l.check(a).is_ok() && l.check(a).is_ok());
        assert_eq!(
            l.check(a).unwrap_err().status,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert!(l.check(b).is_ok());
        tokio::time::advance(std::time::Duration::from_secs(20)).await;
        assert!(l.check(a).is_ok());
    }
}
