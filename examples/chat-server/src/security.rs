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
//! - [`AuthLimiter`]: sign-in attempts per client address (an IPv4 address or an IPv6 /64),
//!   because each one costs an argon2 hash (tens of milliseconds and 19 MiB) by design. One
//!   budget for HTTP and TCP sign-ins: it is also the TCP transport's `SignInGate`.
//! - [`WriteLimiter`] (through the [`Writer`] extractor): HTTP writes per user, at the rate a
//!   WebSocket session may send requests.

use crate::AppState;
use crate::config::Config;
use crate::error::ApiError;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chat_core::conn::IpKey;
use chat_core::ratelimit::TokenBucket;
use chat_core::{Identity, Limits, UserId};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The session cookie. The same name transport-ws reads by default, so the WebSocket
/// handshake is authenticated by the very cookie the sign-in set.
pub(crate) const COOKIE: &str = "chat_token";

/// The signed-in user of a request, and the token that proved it.
#[derive(Clone)]
pub(crate) struct CurrentUser {
    pub(crate) identity: Identity,
    pub(crate) token: String,
}

impl std::fmt::Debug for CurrentUser {
    // The token stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentUser")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
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

/// Token buckets by key (a client address, a user), in a map whose size is bounded.
///
/// What is bounded, and what forgetting a bucket can cost:
/// - the map holds at most `cap` buckets (some 64 bytes each);
/// - a full bucket is the same as none, so full ones are forgotten first, at no cost;
/// - when the map is still full, the fullest eighth of the buckets that hold at least one
///   token is forgotten (one scan per `cap / 8` new keys). A bucket that is refusing (less than
///   one token) is never forgotten: a key that is being limited stays limited however many
///   other keys show up, so flooding with fresh keys cannot reset it. A forgotten bucket only
///   gains back what it had used, and it is forgotten only while it is among the fullest;
/// - when every bucket is refusing, there is no room, and new keys are refused too (until one
///   bucket has a token again, `1 / rate` seconds at most unless someone keeps them all
///   drained). Failing open instead would let a new key try without limit while the map is
///   full.
#[derive(Debug)]
pub(crate) struct KeyedLimiter<K> {
    rate: f64,
    burst: f64,
    cap: usize,
    state: Mutex<Keyed<K>>,
}

#[derive(Debug)]
struct Keyed<K> {
    buckets: HashMap<K, TokenBucket>,
    /// After a pass that found nothing to forget: new keys are refused until then without
    /// scanning the map again.
    no_room_until: Option<Instant>,
}

/// Why a [`KeyedLimiter`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// This key's bucket is empty; it holds a token again after this long.
    Limited(Duration),
    /// A new key, and the map is full of buckets that are all refusing; one gains a token
    /// within this long.
    NoRoom(Duration),
}

impl Denied {
    /// When to try again, for `Retry-After`.
    pub(crate) fn retry_after(self) -> Duration {
        match self {
            Denied::Limited(d) | Denied::NoRoom(d) => d,
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy> KeyedLimiter<K> {
    /// Buckets of `burst` tokens refilled at `rate` a second, for at most `cap` keys at once.
    pub(crate) fn new(rate: f64, burst: f64, cap: usize) -> KeyedLimiter<K> {
        KeyedLimiter {
            rate,
            burst: burst.max(1.0),
            cap: cap.max(8),
            state: Mutex::new(Keyed {
                buckets: HashMap::new(),
                no_room_until: None,
            }),
        }
    }

    /// Takes one token from `key`'s bucket.
    pub(crate) fn take(&self, key: K) -> Result<(), Denied> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = st.buckets.get_mut(&key) {
            return if bucket.try_take() {
                Ok(())
            } else {
                Err(Denied::Limited(bucket.until_token()))
            };
        }
        if st.buckets.len() >= self.cap && !self.make_room(&mut st) {
            let wait = st.no_room_until.map_or(Duration::ZERO, |t| {
                t.saturating_duration_since(Instant::now())
            });
            return Err(Denied::NoRoom(wait));
        }
        let mut bucket = TokenBucket::new(self.rate, self.burst);
        // A new bucket holds `burst` ≥ 1 tokens.
        let taken = bucket.try_take();
        let wait = bucket.until_token();
        st.buckets.insert(key, bucket);
        if taken {
            Ok(())
        } else {
            Err(Denied::Limited(wait))
        }
    }

    /// Forgets buckets as the type's documentation says; false if none could go.
    fn make_room(&self, st: &mut Keyed<K>) -> bool {
        let now = Instant::now();
        if st.no_room_until.is_some_and(|t| now < t) {
            return false;
        }
        st.no_room_until = None;
        st.buckets.retain(|_, b| b.available() < self.burst);
        let low_water = self.cap - self.cap / 8;
        if st.buckets.len() > low_water {
            let excess = st.buckets.len() - low_water;
            let mut candidates: Vec<(f64, K)> = st
                .buckets
                .iter()
                .map(|(k, b)| (b.available(), *k))
                .filter(|(level, _)| *level >= 1.0)
                .collect();
            if candidates.len() > excess {
                // The fullest `excess` first.
                candidates.select_nth_unstable_by(excess - 1, |a, b| b.0.total_cmp(&a.0));
                candidates.truncate(excess);
            }
            for (_, k) in candidates {
                st.buckets.remove(&k);
            }
        }
        if st.buckets.len() >= self.cap {
            // Every bucket is refusing; the first gains a token within `1 / rate` seconds.
            let wait = Duration::try_from_secs_f64(1.0 / self.rate)
                .unwrap_or(REFILL)
                .min(REFILL);
            st.no_room_until = Some(now + wait);
            return false;
        }
        true
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .buckets
            .len()
    }
}

/// Most keys each limiter tracks at once; see [`KeyedLimiter`] for what happens past it.
const MAX_TRACKED: usize = 10_000;
const REFILL: Duration = Duration::from_secs(60);

/// Sign-in attempts per client address — an IPv4 address or an IPv6 /64, as connections are
/// counted ([`IpKey`]): one IPv6 client usually holds a whole /64, so limiting single
/// addresses would not limit anything. A token bucket each, with a burst of a minute's worth
/// refilled over a minute; at most [`MAX_TRACKED`] addresses are tracked at once, as
/// [`KeyedLimiter`] says.
#[derive(Debug)]
pub(crate) struct AuthLimiter(KeyedLimiter<IpKey>);

impl AuthLimiter {
    pub(crate) fn new(per_minute: u32) -> AuthLimiter {
        AuthLimiter::with_cap(per_minute, MAX_TRACKED)
    }

    fn with_cap(per_minute: u32, cap: usize) -> AuthLimiter {
        let per_minute = f64::from(per_minute.max(1));
        AuthLimiter(KeyedLimiter::new(
            per_minute / REFILL.as_secs_f64(),
            per_minute,
            cap,
        ))
    }

    /// Takes one attempt for `ip`, or refuses with 429.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.0.take(IpKey::of(ip)).map_err(|why| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                match why {
                    Denied::Limited(_) => {
                        "too many sign-in attempts from your address; wait a minute"
                    }
                    Denied::NoRoom(_) => {
                        "too many addresses are signing in at once; try again in a few seconds"
                    }
                },
            )
            .retry_after(why.retry_after())
        })
    }
}

/// The TCP transport's sign-ins (binary `hello` with a login or guest name, line-mode
/// `/login` and `/nick`) take from the same per-address budget as the HTTP ones, so that
/// reconnecting over TCP is no way around it.
impl transport_tcp::SignInGate for AuthLimiter {
    fn admit(&self, peer: IpAddr) -> bool {
        self.0.take(IpKey::of(peer)).is_ok()
    }
}

/// HTTP requests that change something (posting messages, creating rooms, invites, …), per
/// signed-in user: a token bucket with the rate and burst a WebSocket session has
/// (`--requests-per-second`, `--request-burst`), shared by all of the user's HTTP clients.
/// Without it, a script with a token could post as fast as the store writes, around the
/// limit its sockets have. At most [`MAX_TRACKED`] users are tracked at once, as
/// [`KeyedLimiter`] says; a user's bucket is full again, and forgotten, at most `burst / rate`
/// seconds after their last write (2 s by default).
#[derive(Debug)]
pub(crate) struct WriteLimiter(KeyedLimiter<UserId>);

impl WriteLimiter {
    pub(crate) fn new(limits: &Limits) -> WriteLimiter {
        WriteLimiter::with_cap(limits, MAX_TRACKED)
    }

    fn with_cap(limits: &Limits, cap: usize) -> WriteLimiter {
        WriteLimiter(KeyedLimiter::new(
            limits.requests_per_second,
            limits.request_burst,
            cap,
        ))
    }

    /// Takes one write for `user`, or refuses with 429 `rate_limited`.
    pub(crate) fn check(&self, user: UserId) -> Result<(), ApiError> {
        self.0.take(user).map_err(|why| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                match why {
                    Denied::Limited(_) => "too many requests; slow down",
                    Denied::NoRoom(_) => "the server is busy; try again in a moment",
                },
            )
            .retry_after(why.retry_after())
        })
    }
}

/// The signed-in user of a request that changes something, with one write taken from their
/// [`WriteLimiter`] bucket: 401 without a user, then 429 `rate_limited` past the limit, both
/// before the body is read.
#[derive(Debug, Clone)]
pub(crate) struct Writer(pub(crate) CurrentUser);

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let user = CurrentUser::from_request_parts(parts, app).await?;
        app.write_limiter.check(user.identity.user)?;
        Ok(Writer(user))
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
        let e = l.check(a).unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        // Three a minute: the next one in twenty seconds.
        let wait = e.retry_after.expect("a Retry-After").as_secs_f64();
        assert!((wait - 20.0).abs() < 1e-6, "{wait}");
        assert!(l.check(b).is_ok());
        tokio::time::advance(std::time::Duration::from_secs(20)).await;
        assert!(l.check(a).is_ok());
    }

    fn v4(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[tokio::test(start_paused = true)]
    async fn an_ipv6_client_cannot_rotate_addresses_within_its_64() {
        let l = AuthLimiter::new(3);
        let in_64 = |i: u16| IpAddr::from(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, i, 0, i));
        for i in 0..3 {
            assert!(l.check(in_64(i)).is_ok());
        }
        for i in 3..200 {
            let e = l.check(in_64(i)).unwrap_err();
            assert_eq!(
                (e.status, e.code.as_ref()),
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            );
        }
        assert_eq!(l.0.tracked(), 1, "one bucket for the whole /64");
        // The neighbouring /64 is another client.
        let other = IpAddr::from(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert!(l.check(other).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn flooding_with_new_addresses_does_not_reset_a_limited_one() {
        let cap = 64;
        let l = AuthLimiter::with_cap(3, cap);
        let attacker = v4(0);
        assert!(
            l.check(attacker).is_ok() && l.check(attacker).is_ok() && l.check(attacker).is_ok()
        );
        assert!(l.check(attacker).is_err());
        for i in 1..=(20 * cap as u32) {
            assert!(l.check(v4(i)).is_ok(), "address {i} finds room");
            assert!(l.0.tracked() <= cap);
        }
        assert!(l.check(attacker).is_err(), "still limited after the flood");
        // Twenty seconds refill one attempt: a reset bucket would allow three.
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(l.check(attacker).is_ok());
        assert!(l.check(attacker).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn writes_are_limited_per_user_at_the_session_rate() {
        let limits = Limits {
            requests_per_second: 2.0,
            request_burst: 4.0,
            ..Limits::default()
        };
        let l = WriteLimiter::with_cap(&limits, 8);
        let (alice, bob) = (UserId(1), UserId(2));
        for _ in 0..4 {
            assert!(l.check(alice).is_ok());
        }
        let e = l.check(alice).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_ref()),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
        assert_eq!(
            e.retry_after,
            Some(Duration::from_millis(500)),
            "a refusal says when the next write is allowed"
        );
        assert!(l.check(bob).is_ok(), "another user has their own bucket");
        // Others writing cannot reset alice's bucket, and the map stays bounded.
        for i in 3..100 {
            assert!(l.check(UserId(i)).is_ok());
        }
        assert!(l.check(alice).is_err());
        assert!(l.0.tracked() <= 8);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(
            l.check(alice).is_ok(),
            "the rate refills one write in half a second"
        );
        assert!(l.check(alice).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_tracked_address_is_limited_new_ones_wait() {
        let cap = 16;
        // A burst of one: every address is limited after its first attempt.
        let l = AuthLimiter::with_cap(1, cap);
        for i in 0..cap as u32 {
            assert!(l.check(v4(i)).is_ok());
        }
        let newcomer = v4(1000);
        let e = l.check(newcomer).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_ref()),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
        let wait = e.retry_after.expect("a Retry-After");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        for i in 0..cap as u32 {
            assert!(l.check(v4(i)).is_err(), "nobody was forgotten to make room");
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(
            l.check(newcomer).is_err(),
            "half a token each: still no room"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(l.check(newcomer).is_ok(), "full buckets are forgotten");
        assert!(l.0.tracked() <= cap);
    }
}
