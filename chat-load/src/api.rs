//! Setup through the server's own HTTP API (`docs/API.md`): accounts, rooms, memberships.
//!
//! The wire protocol has no frame for registering; the API is also what a real deployment's
//! users go through, so the tool exercises nothing private.

use crate::LoadError;
use crate::args::Accounts;
use chat_core::RoomId;
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The password of every account the tool creates (the server wants at least 8 characters).
const PASSWORD: &str = "chat-load password";

/// The longest `Retry-After` waited out; a longer one fails the request with its hint.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);
/// The most one request waits in all for `429`s. Requests sharing an exhausted budget (say,
/// many registrations from one address) queue behind each other for the same refills, so
/// this is a time, not a count; the setup as a whole is bounded by `--setup-timeout`.
const MAX_WAITED: Duration = Duration::from_secs(300);

/// The `Retry-After` of a response in seconds (the form chat-server sends), if it is there
/// and at most [`MAX_RETRY_WAIT`]; at least a second, so that a server answering `0` is not
/// hammered (and the [`MAX_WAITED`] budget runs out).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.max(1))).filter(|d| *d <= MAX_RETRY_WAIT)
}

/// A thin client of the JSON API.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// For the server at `base` (`http://host:port`).
    pub fn new(base: &str) -> Result<Api, LoadError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|source| LoadError::Http {
                url: base.to_string(),
                source,
            })?;
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// Posts `body` to `path`. A `429` with a `Retry-After` of at most [`MAX_RETRY_WAIT`] is
    /// waited out and retried, for at most [`MAX_WAITED`] in all: the server's limits are
    /// per user and per address, and a setup of many rooms or accounts runs into them by
    /// design. (The callers bound the whole setup in time as well.)
    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Result<Value, LoadError> {
        let url = format!("{}{path}", self.base);
        let http_err = |source| LoadError::Http {
            url: url.clone(),
            source,
        };
        let mut waited = Duration::ZERO;
        let (status, text) = loop {
            let mut req = self.http.post(&url).json(&body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(http_err)?;
            let status = resp.status();
            let wait = retry_after(resp.headers());
            let text = resp.text().await.map_err(http_err)?;
            match wait {
                Some(wait) if status.as_u16() == 429 && waited + wait <= MAX_WAITED => {
                    waited += wait;
                    tokio::time::sleep(wait).await;
                }
                _ => break (status, text),
            }
        };
        if !status.is_success() {
            let hint = match status.as_u16() {
                429 if path.starts_with("/api/register") || path.starts_with("/api/guest") => {
                    " (start chat-server with a higher --auth-attempts-per-minute)"
                }
                403 if path.starts_with("/api/guest") => " (start chat-server with --guests)",
                429 => {
                    " (HTTP writes are limited per user: start chat-server with a higher \
                     --request-burst and --requests-per-second)"
                }
                _ => "",
            };
            return Err(LoadError::Api {
                url,
                status: status.as_u16(),
                body: text.chars().take(300).collect(),
                hint: hint.to_string(),
            });
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| LoadError::Api {
            url,
            status: status.as_u16(),
            body: format!(
                "not JSON ({e}): {}",
                text.chars().take(200).collect::<String>()
            ),
            hint: String::new(),
        })
    }

    /// Creates an account (or a guest) and returns its token.
    pub async fn account(&self, kind: Accounts, username: &str) -> Result<String, LoadError> {
        let v = match kind {
            Accounts::Register => {
                self.post(
                    "/api/register",
                    None,
                    json!({"username": username, "password": PASSWORD}),
                )
                .await?
            }
            Accounts::Guest => {
                self.post("/api/guest", None, json!({"username": username}))
                    .await?
            }
        };
        v["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| LoadError::Config(format!("no token in the sign-in reply: {v}")))
    }

    /// Creates a public room owned by the token's user.
    pub async fn create_room(&self, token: &str, name: &str) -> Result<RoomId, LoadError> {
        let v = self
            .post(
                "/api/rooms",
                Some(token),
                json!({"name": name, "kind": "public"}),
            )
            .await?;
        v["room"]["id"]
            .as_u64()
            .map(RoomId)
            .ok_or_else(|| LoadError::Config(format!("no room id in the reply: {v}")))
    }

    /// Joins a public room.
    pub async fn join(&self, token: &str, room: RoomId) -> Result<(), LoadError> {
        self.post(
            &format!("/api/rooms/{}/join", room.0),
            Some(token),
            json!({}),
        )
        .await
        .map(|_| ())
    }
}

/// Runs `f(i)` for `i in 0..n`, at most `concurrency` at once; results in index order. The
/// first error wins (the remaining tasks are dropped with the set).
pub async fn bounded<T, F, Fut>(n: usize, concurrency: usize, f: F) -> Result<Vec<T>, LoadError>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, LoadError>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for i in 0..n {
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        // Collect finished tasks as we go, so that an early error stops the setup early.
        while let Some(done) = set.try_join_next() {
            let (j, r) = done.expect("setup task panicked");
            out[j] = Some(r?);
        }
        let fut = f(i);
        set.spawn(async move {
            let r = fut.await;
            drop(permit);
            (i, r)
        });
    }
    while let Some(done) = set.join_next().await {
        let (i, r) = done.expect("setup task panicked");
        out[i] = Some(r?);
    }
    Ok(out.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, HeaderValue::from_static(v));
            retry_after(&h)
        };
        assert_eq!(with("3"), Some(Duration::from_secs(3)));
        assert_eq!(with("0"), Some(Duration::from_secs(1)), "never a zero wait");
        assert_eq!(with(" 60 "), Some(MAX_RETRY_WAIT));
        assert_eq!(with("61"), None, "longer than the tool waits");
        assert_eq!(
            with("Wed, 21 Oct 2015 07:28:00 GMT"),
            None,
            "dates are not sent"
        );
        assert_eq!(with("-1"), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
