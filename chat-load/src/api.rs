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

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Result<Value, LoadError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.post(&url).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let http_err = |source| LoadError::Http {
            url: url.clone(),
            source,
        };
        let resp = req.send().await.map_err(http_err)?;
        let status = resp.status();
        let text = resp.text().await.map_err(http_err)?;
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
