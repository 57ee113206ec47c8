//! The HTTP side: reading the upgrade request, deciding on it, and answering.
//!
//! # Why the request is parsed here and not in tungstenite's callback
//! tungstenite's server handshake calls a *synchronous* callback with the request; checking a
//! token means a store look-up, which is async. Rather than block a runtime thread or smuggle
//! a future through a sync callback, the server reads the request head itself — into a buffer
//! capped at [`WsConfig::max_request_bytes`], under [`WsConfig::handshake_timeout`] — parses
//! it with `httparse`, decides (origin, credentials, codec) with ordinary async code, and then
//! either writes the HTTP error or writes the `101 Switching Protocols` itself (the accept key
//! from tungstenite's `derive_accept_key`) and wraps the socket with
//! `WebSocketStream::from_partially_read`, handing over any bytes the client sent after its
//! request. Nothing about the upgrade is left to chance: the request is validated as RFC 6455
//! §4.2.1 requires, and no extension (permessage-deflate included) is ever negotiated.

use crate::config::WsConfig;
use chat_core::auth::Credentials;
use chat_core::conn::{CodecChoice, Refused};
use chat_core::{Codec, Engine, Error as CoreError, Identity, TrustedAuthenticator};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::{HeaderMap, Method, Request, Uri, Version, header};

/// The subprotocol that selects the JSON codec (WebSocket text frames).
pub const PROTOCOL_JSON: &str = "chat.v1.json";
/// The subprotocol that selects the postcard codec (WebSocket binary frames).
pub const PROTOCOL_POSTCARD: &str = "chat.v1.postcard";

/// A handshake the server accepts: who connects, and how the connection's replies are
/// encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The authenticated user; `None` when no credential was presented and
    /// [`crate::AuthConfig::hello`] lets the client authenticate with its first frame.
    pub identity: Option<Identity>,
    /// The codec of the frames the server sends (see the crate docs for the rule).
    pub codec: CodecChoice,
    /// The subprotocol to echo in `Sec-WebSocket-Protocol`, if the client offered one we
    /// speak. Embedders must send it in their `101` response; browsers fail the connection
    /// otherwise.
    pub protocol: Option<&'static str>,
}

/// A refused handshake: the HTTP response to send instead of upgrading.
///
/// The body is a small JSON object, `{"error":"<code>","message":"<text>"}`, so that clients
/// can tell "log in again" (401) from "wrong site" (403) from "come back later" (503/429).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    status: u16,
    code: &'static str,
    message: String,
    headers: Vec<(&'static str, String)>,
}

impl Rejection {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Rejection {
        Rejection {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Rejection {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn unauthorized(message: impl Into<String>, token_presented: bool) -> Rejection {
        // RFC 6750 §3: say which scheme, and whether the token itself was the problem.
        let challenge = if token_presented {
            r#"Bearer realm="chat", error="invalid_token""#
        } else {
            r#"Bearer realm="chat""#
        };
        Rejection::new(401, "unauthorized", message).with_header("WWW-Authenticate", challenge)
    }

    pub(crate) fn refused(why: Refused) -> Rejection {
        match why {
            Refused::Full => Rejection::new(503, "server_busy", "the server is at capacity")
                .with_header("Retry-After", "5"),
            Refused::PerIp => Rejection::new(
                429,
                "too_many_connections",
                "too many connections from your address",
            )
            .with_header("Retry-After", "5"),
        }
    }

    pub(crate) fn too_large() -> Rejection {
        Rejection::new(431, "request_too_large", "request headers too large")
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Rejection {
        Rejection::new(400, "bad_request", message)
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The stable error code in the body (`unauthorized`, `forbidden_origin`, `server_busy`,
    /// `too_many_connections`, `bad_request`, …).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The human-readable message in the body.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Extra response headers (`WWW-Authenticate`, `Retry-After`, …).
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.headers.iter().map(|(n, v)| (*n, v.as_str()))
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.code, "message": self.message }).to_string()
    }

    /// The complete HTTP/1.1 response, for servers that write bytes themselves.
    pub fn to_http_bytes(&self) -> Vec<u8> {
        let body = self.body();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason_phrase(self.status),
            body.len()
        );
        for (name, value) in &self.headers {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&body);
        out.into_bytes()
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Checks the origin, authenticates, and picks the codec — everything about a handshake except
/// the WebSocket mechanics. Shared by the standalone server and by embedders (see
/// [`crate::WsServer::authorize`]).
pub(crate) async fn authorize(
    engine: &Engine,
    config: &WsConfig,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Admission, Rejection> {
    // Origin before credentials: a cross-site page learns nothing, and costs no store look-up.
    let origin = single_header(headers, header::ORIGIN)?;
    let host = single_header(headers, header::HOST)?;
    if !config.origins.allows(origin, host) {
        return Err(Rejection::new(
            403,
            "forbidden_origin",
            "this origin may not connect",
        ));
    }
    let (protocol, codec) = choose_codec(uri, headers)?;
    let identity = authenticate(engine, config, uri, headers).await?;
    Ok(Admission {
        identity,
        codec,
        protocol,
    })
}

/// A header that must appear at most once (a duplicated `Origin` is an attack, not a list).
fn single_header(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<&str>, Rejection> {
    let mut values = headers.get_all(&name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Rejection::bad_request(format!("duplicate {name} header")));
    }
    match first {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| Rejection::bad_request(format!("{name} is not ASCII"))),
    }
}

/// The rule: an offered subprotocol we speak (the client's first preference wins), else the
/// `codec` query parameter, else the codec of the first data frame (JSON until then).
fn choose_codec(
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(Option<&'static str>, CodecChoice), Rejection> {
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    for p in offered {
        if p.eq_ignore_ascii_case(PROTOCOL_JSON) {
            return Ok((Some(PROTOCOL_JSON), CodecChoice::Fixed(Codec::Json)));
        }
        if p.eq_ignore_ascii_case(PROTOCOL_POSTCARD) {
            return Ok((Some(PROTOCOL_POSTCARD), CodecChoice::Fixed(Codec::Postcard)));
        }
    }
    match query_param(uri, "codec").as_deref() {
        None => Ok((
            None,
            CodecChoice::FirstFrame {
                until_then: Codec::Json,
            },
        )),
        Some("json") => Ok((None, CodecChoice::Fixed(Codec::Json))),
        Some("postcard") => Ok((None, CodecChoice::Fixed(Codec::Postcard))),
        Some(_) => Err(Rejection::bad_request(
            "codec must be \"json\" or \"postcard\"",
        )),
    }
}

enum Presented {
    Token(String),
    DevUser(String),
}

/// The credential the request presents, by the precedence in [`crate::AuthConfig`].
fn presented(
    config: &WsConfig,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<Presented>, Rejection> {
    let auth = &config.auth;
    if auth.bearer_header {
        if let Some(value) = single_header(headers, header::AUTHORIZATION)? {
            let token = value
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    Rejection::unauthorized(
                        "the Authorization header must be \"Bearer <token>\"",
                        true,
                    )
                })?;
            return Ok(Some(Presented::Token(token.to_string())));
        }
    }
    if auth.query_token {
        if let Some(t) = query_param(uri, &auth.query_param) {
            return Ok(Some(Presented::Token(t)));
        }
    }
    if let Some(name) = &auth.cookie {
        if let Some(t) = cookie(headers, name) {
            return Ok(Some(Presented::Token(t)));
        }
    }
    if let Some(param) = &auth.insecure_dev_user_param {
        if let Some(user) = query_param(uri, param) {
            return Ok(Some(Presented::DevUser(user)));
        }
    }
    Ok(None)
}

async fn authenticate(
    engine: &Engine,
    config: &WsConfig,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<Identity>, Rejection> {
    let identity = match presented(config, uri, headers)? {
        None if config.auth.hello => return Ok(None),
        None => Err(Rejection::unauthorized("no credentials presented", false)),
        Some(Presented::Token(token)) => engine
            .authenticator()
            .authenticate(&Credentials::Token(token))
            .await
            .map_err(|e| auth_error(&e, true)),
        Some(Presented::DevUser(name)) => {
            tracing::warn!(user = %name, "insecure development identity used");
            TrustedAuthenticator::new(engine.store().clone())
                .user(&name)
                .await
                .map(|u| Identity::of(&u))
                .map_err(|e| auth_error(&e, false))
        }
    };
    identity.map(Some)
}

fn auth_error(e: &CoreError, token: bool) -> Rejection {
    match e {
        CoreError::Storage { .. } | CoreError::Internal(_) => {
            tracing::error!(error = %e, "authentication failed on a server error");
            Rejection::new(
                503,
                "unavailable",
                "authentication is unavailable; retry later",
            )
            .with_header("Retry-After", "5")
        }
        CoreError::Forbidden(why) => Rejection::new(403, "forbidden", *why),
        CoreError::Invalid { .. } | CoreError::BadFrame(_) => {
            Rejection::unauthorized(e.to_string(), token)
        }
        _ => Rejection::unauthorized(e.to_string(), token),
    }
}

/// The first value of a query parameter, percent-decoded (`+` is a space, as in forms).
pub(crate) fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k)? == name).then(|| percent_decode(v))?
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|v| !v.is_empty())
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The WebSocket mechanics of RFC 6455 §4.2.1; returns the `Sec-WebSocket-Accept` value.
pub(crate) fn check_upgrade(config: &WsConfig, req: &Request<()>) -> Result<String, Rejection> {
    if req.method() != Method::GET {
        return Err(
            Rejection::new(405, "method_not_allowed", "use GET").with_header("Allow", "GET")
        );
    }
    if req.version() != Version::HTTP_11 {
        return Err(Rejection::bad_request("HTTP/1.1 is required"));
    }
    if let Some(path) = &config.path {
        if req.uri().path() != path {
            return Err(Rejection::new(
                404,
                "not_found",
                "no WebSocket endpoint here",
            ));
        }
    }
    let headers = req.headers();
    if !has_token(headers, header::UPGRADE, "websocket")
        || !has_token(headers, header::CONNECTION, "upgrade")
    {
        return Err(Rejection::new(
            426,
            "upgrade_required",
            "this endpoint speaks WebSocket only",
        )
        .with_header("Upgrade", "websocket")
        .with_header("Connection", "Upgrade"));
    }
    if single_header(headers, header::SEC_WEBSOCKET_VERSION)? != Some("13") {
        return Err(Rejection::new(
            426,
            "unsupported_version",
            "only WebSocket version 13 is supported",
        )
        .with_header("Sec-WebSocket-Version", "13"));
    }
    let key = single_header(headers, header::SEC_WEBSOCKET_KEY)?
        .map(str::trim)
        .filter(|k| is_base64_16(k))
        .ok_or_else(|| Rejection::bad_request("missing or invalid Sec-WebSocket-Key"))?;
    Ok(derive_accept_key(key.as_bytes()))
}

/// Whether `key` is the base64 of 16 bytes, as `Sec-WebSocket-Key` must be.
fn is_base64_16(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() == 24
        && b[22..] == *b"=="
        && b[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// The `101` response.
pub(crate) fn switching_protocols(accept: &str, protocol: Option<&str>) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(p) = protocol {
        out.push_str("Sec-WebSocket-Protocol: ");
        out.push_str(p);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Why reading a request head failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed or the socket failed; nobody to answer.
    Gone,
    /// Answer with this.
    Reject(Rejection),
}

/// Reads one HTTP request head: at most `config.max_request_bytes`, growing the buffer as
/// bytes arrive (a slow handshake costs little memory). Returns the request and whatever the
/// client sent after it. The caller bounds the time.
pub(crate) async fn read_request<S: AsyncRead + Unpin>(
    io: &mut S,
    config: &WsConfig,
) -> Result<(Request<()>, Vec<u8>), ReadError> {
    let max = config.max_request_bytes;
    let mut buf = vec![0u8; max.min(1024)];
    let mut len = 0;
    loop {
        if len == buf.len() {
            if len >= max {
                return Err(ReadError::Reject(Rejection::too_large()));
            }
            buf.resize((len * 2).min(max), 0);
        }
        let n = io
            .read(&mut buf[len..])
            .await
            .map_err(|_| ReadError::Gone)?;
        if n == 0 {
            return Err(ReadError::Gone);
        }
        // The cheap check first (as mini-redis does for frames): is a whole head buffered?
        // The blank line ends with "\n\n" or "\n\r\n"; only look at the new bytes and the
        // three before them.
        let from = len.saturating_sub(3);
        len += n;
        let window = &buf[from..len];
        let complete =
            window.windows(2).any(|w| w == b"\n\n") || window.windows(3).any(|w| w == b"\n\r\n");
        if !complete {
            continue;
        }
        let mut headers = vec![httparse::EMPTY_HEADER; config.max_headers];
        let mut parsed = httparse::Request::new(&mut headers);
        return match parsed.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(head_len)) => {
                let req = to_request(&parsed).map_err(ReadError::Reject)?;
                Ok((req, buf[head_len..len].to_vec()))
            }
            Ok(httparse::Status::Partial) => continue,
            Err(httparse::Error::TooManyHeaders) => Err(ReadError::Reject(Rejection::too_large())),
            Err(e) => Err(ReadError::Reject(Rejection::bad_request(format!(
                "malformed request: {e}"
            )))),
        };
    }
}

fn to_request(parsed: &httparse::Request<'_, '_>) -> Result<Request<()>, Rejection> {
    let bad = |what: &str| Rejection::bad_request(format!("malformed request: {what}"));
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut builder = Request::builder()
        .method(parsed.method.ok_or_else(|| bad("method"))?)
        .uri(parsed.path.ok_or_else(|| bad("path"))?)
        .version(version);
    for h in parsed.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    builder.body(()).map_err(|e| bad(&e.to_string()))
}

/// Writes a refusal and half-closes, so the client reads the response before the FIN.
pub(crate) async fn reject<S: AsyncWrite + Unpin>(io: &mut S, rejection: &Rejection) {
    let _ = io.write_all(&rejection.to_http_bytes()).await;
    let _ = io.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn query_params_are_percent_decoded() {
        let u = uri("/ws?a=1&token=ab%2Dc&user=J%C3%BCrgen+K&flag");
        assert_eq!(query_param(&u, "token").as_deref(), Some("ab-c"));
        assert_eq!(query_param(&u, "user").as_deref(), Some("Jürgen K"));
        assert_eq!(query_param(&u, "flag").as_deref(), Some(""));
        assert_eq!(query_param(&u, "nope"), None);
        assert_eq!(query_param(&uri("/ws?token=%zz"), "token"), None);
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; chat_token=\"xyz\"".parse().unwrap());
        h.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&h, "chat_token").as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&h, "chat"), None);
    }

    #[test]
    fn accept_key_matches_the_rfc_example() {
        // RFC 6455 §1.3.
        let req = Request::builder()
            .uri("/chat")
            .header("Host", "server.example.com")
            .header("Upgrade", "websocket")
            .header("Connection", "keep-alive, Upgrade")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Version", "13")
            .body(())
            .unwrap();
        assert_eq!(
            check_upgrade(&WsConfig::default(), &req).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn subprotocol_beats_query_and_first_frame_is_the_fallback() {
        let mut h = HeaderMap::new();
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            "other, chat.v1.postcard, chat.v1.json".parse().unwrap(),
        );
        let (p, c) = choose_codec(&uri("/?codec=json"), &h).unwrap();
        assert_eq!(
            (p, c),
            (Some(PROTOCOL_POSTCARD), CodecChoice::Fixed(Codec::Postcard))
        );
        let (p, c) = choose_codec(&uri("/?codec=postcard"), &HeaderMap::new()).unwrap();
        assert_eq!((p, c), (None, CodecChoice::Fixed(Codec::Postcard)));
        let (_, c) = choose_codec(&uri("/"), &HeaderMap::new()).unwrap();
        assert_eq!(
            c,
            CodecChoice::FirstFrame {
                until_then: Codec::Json
            }
        );
        assert!(choose_codec(&uri("/?codec=xml"), &HeaderMap::new()).is_err());
    }

    #[tokio::test]
    async fn request_heads_are_read_within_the_cap() {
        let cfg = WsConfig::default();
        let raw = b"GET /ws?x=1 HTTP/1.1\r\nHost: h\r\n\r\nEXTRA";
        let (req, rest) = read_request(&mut &raw[..], &cfg).await.unwrap();
        assert_eq!(req.uri().path(), "/ws");
        assert_eq!(rest, b"EXTRA");
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        match read_request(&mut huge.as_bytes(), &cfg).await {
            Err(ReadError::Reject(r)) => assert_eq!(r.status(), 431),
            other => panic!("{other:?}"),
        }
        match read_request(&mut &b"NOT HTTP\r\n\r\n"[..], &cfg).await {
            Err(ReadError::Reject(r)) => assert_eq!(r.status(), 400),
            other => panic!("{other:?}"),
        }
        match read_request(&mut &b"GET / HTTP/1.1\r\nHost"[..], &cfg).await {
            Err(ReadError::Gone) => {}
            other => panic!("{other:?}"),
        }
    }
}
