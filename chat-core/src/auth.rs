//! Authentication: who a session is.
//!
//! Transports hand whatever the client presented to an [`Authenticator`] and get an
//! [`Identity`] back. The engine ships [`Accounts`] (password accounts and opaque session
//! tokens on top of the [`Store`]) and [`TrustedAuthenticator`] for development. Embedders
//! with their own identity provider implement the trait themselves.
//!
//! Passwords are hashed with argon2id at OWASP's parameters (m = 19 456 KiB, t = 2, p = 1)
//! on Tokio's blocking pool, never on the async threads. Tokens are 32 random bytes; the store
//! keeps only their SHA-256, so a leaked database does not leak live sessions.

use crate::config::Limits;
use crate::error::{Error, Result};
use crate::ids::{Timestamp, UserId};
use crate::model::{AuthSession, User};
use crate::store::Store;
use crate::validate;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use async_trait::async_trait;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};

/// What a client presented.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A session token from [`Accounts::login`].
    Token(String),
    /// Username and password.
    Password {
        /// The username.
        username: String,
        /// The password.
        password: String,
    },
    /// A guest name (refused unless [`Limits::allow_guests`]).
    Guest(String),
}

impl std::fmt::Debug for Credentials {
    // Never print secrets, not even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(..)"),
            Credentials::Password { username, .. } => {
                write!(f, "Password {{ username: {username:?}, .. }}")
            }
            Credentials::Guest(name) => write!(f, "Guest({name:?})"),
        }
    }
}

/// An authenticated user, as a session carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user.
    pub user: UserId,
    /// Their name.
    pub username: String,
    /// The hash of the token this identity came from, if any: revoking that token closes the
    /// sessions opened with it.
    pub token_hash: Option<[u8; 32]>,
}

impl Identity {
    /// The identity of a user, without a token.
    pub fn of(user: &User) -> Identity {
        Identity {
            user: user.id,
            username: user.username.clone(),
            token_hash: None,
        }
    }
}

/// Turns credentials into an identity.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Checks the credentials. Unknown users and wrong passwords must give the same error
    /// ([`Error::InvalidCredentials`]) so that accounts cannot be enumerated.
    async fn authenticate(&self, credentials: &Credentials) -> Result<Identity>;

    /// A session token for a guest that [`Authenticator::authenticate`] just signed in with
    /// [`Credentials::Guest`], handed to the client in its `welcome`. A guest name is taken
    /// once used, so without a token the guest could never come back — not even after a
    /// dropped connection. The default gives none (for authenticators without guests, or
    /// whose guests may sign in by name again).
    async fn guest_token(&self, identity: &Identity) -> Result<Option<Token>> {
        let _ = identity;
        Ok(None)
    }
}

/// A token handed to a client once; only its hash is kept.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The token's text (URL-safe base64 of 32 random bytes).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its SHA-256, as stored.
    pub fn hash(&self) -> [u8; 32] {
        hash_token(&self.0)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// SHA-256 of a token's text.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Random bytes from the OS, URL-safe base64 without padding.
pub fn random_code(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

fn argon2() -> Argon2<'static> {
    // OWASP Password Storage Cheat Sheet, argon2id option 2: m=19 MiB, t=2, p=1.
    let params = Params::new(19_456, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Runs password hashing off the async threads, on a small pool of dedicated threads.
///
/// Why not `tokio::task::spawn_blocking`: each argon2 call allocates a 19 MiB block, and the
/// blocking pool has up to hundreds of threads that other work (store reads) also uses. With
/// glibc every thread that ever hashed keeps its own arena holding such a block, so under a
/// wave of sign-ups the process grew by ~9.5 MiB per registration and never shrank (measured
/// with `chat-load`, docs/BENCHMARKS.md). A fixed set of threads bounds that memory to
/// `threads × 19 MiB` and bounds the CPU that hashing can take from the rest of the server.
/// Callers beyond the pool's capacity wait in a bounded queue.
async fn on_hashing_pool<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    use std::sync::mpsc::{SyncSender, sync_channel};
    type Job = Box<dyn FnOnce() + Send>;
    static POOL: OnceLock<std::sync::Mutex<SyncSender<Job>>> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 4);
        let (tx, rx) = sync_channel::<Job>(256);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("chat-hash-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only to take the next job, never while hashing.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
        }
        std::sync::Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = reply_tx.send(job());
    });
    let sender = crate::hub::lock(pool).clone();
    match sender.try_send(job) {
        Ok(()) => {}
        // 256 hashes already wait: wait for room on the blocking pool, not on an async worker.
        Err(std::sync::mpsc::TrySendError::Full(job)) => {
            tokio::task::spawn_blocking(move || sender.send(job))
                .await
                .map_err(|e| Error::Internal(format!("hashing queue failed: {e}")))?
                .map_err(|_| Error::Internal("the hashing pool is gone".into()))?;
        }
        Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
            return Err(Error::Internal("the hashing pool is gone".into()));
        }
    }
    reply_rx
        .await
        .map_err(|_| Error::Internal("a hashing job was dropped".into()))
}

/// Hashes a password into a PHC string on the hashing pool.
pub async fn hash_password(password: String) -> Result<String> {
    on_hashing_pool(move || {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
        let salt =
            SaltString::encode_b64(&salt).map_err(|e| Error::Internal(format!("salt: {e}")))?;
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::Internal(format!("argon2: {e}")))
    })
    .await?
}

/// Verifies a password against a PHC string on the hashing pool.
pub async fn verify_password(password: String, phc: String) -> Result<bool> {
    on_hashing_pool(move || {
        let Ok(parsed) = PasswordHash::new(&phc) else {
            return false;
        };
        // Verify with the parameters recorded in the hash, so old hashes keep working.
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
    .await
}

/// A hash of a random password, verified against when the user does not exist, so that
/// "unknown user" costs the same time as "wrong password".
async fn dummy_hash() -> Result<&'static str> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(h) = DUMMY.get() {
        return Ok(h);
    }
    let h = hash_password(random_code(16)?).await?;
    Ok(DUMMY.get_or_init(|| h))
}

/// Built-in password accounts and session tokens.
#[derive(Clone)]
pub struct Accounts {
    store: Arc<dyn Store>,
    limits: Arc<Limits>,
}

impl Accounts {
    /// Accounts on `store`.
    pub fn new(store: Arc<dyn Store>, limits: Arc<Limits>) -> Accounts {
        Accounts { store, limits }
    }

    /// Creates a password account.
    pub async fn register(&self, username: &str, password: &str) -> Result<User> {
        validate::username(username)?;
        validate::new_password(password, &self.limits)?;
        let hash = hash_password(password.to_string()).await?;
        self.store
            .create_user(username, Some(hash), false, Timestamp::now())
            .await
    }

    /// Checks a username and password. The same error for an unknown user and a wrong
    /// password, after the same amount of hashing work.
    pub async fn check_password(&self, username: &str, password: &str) -> Result<User> {
        if password.len() > self.limits.max_password_bytes {
            // Refused before hashing: a megabyte password must not cost a megabyte of argon2.
            return Err(Error::InvalidCredentials);
        }
        let creds = self.store.credentials(username).await?;
        let (phc, user) = match creds {
            Some(c) => match c.password_hash {
                Some(h) => (h, Some(c.user)),
                None => (dummy_hash().await?.to_string(), None),
            },
            None => (dummy_hash().await?.to_string(), None),
        };
        let ok = verify_password(password.to_string(), phc).await?;
        match user {
            Some(u) if ok => Ok(u),
            _ => Err(Error::InvalidCredentials),
        }
    }

    /// Checks a password and issues a session token valid for [`Limits::token_ttl`].
    pub async fn login(&self, username: &str, password: &str) -> Result<(User, Token)> {
        let user = self.check_password(username, password).await?;
        let token = self.issue_token(user.id).await?;
        Ok((user, token))
    }

    /// Issues a session token for a user the application has authenticated itself.
    pub async fn issue_token(&self, user: UserId) -> Result<Token> {
        let token = Token(random_code(32)?);
        let now = Timestamp::now();
        self.store
            .create_auth_session(AuthSession {
                token_hash: token.hash(),
                user,
                created_at: now,
                expires_at: now.plus(self.limits.token_ttl),
            })
            .await?;
        Ok(token)
    }

    /// The identity a token stands for, if it is valid and unexpired.
    pub async fn verify_token(&self, token: &str) -> Result<Identity> {
        if token.is_empty() || token.len() > 128 {
            return Err(Error::InvalidToken);
        }
        let hash = hash_token(token);
        let session = self
            .store
            .auth_session(&hash, Timestamp::now())
            .await?
            .ok_or(Error::InvalidToken)?;
        let user = self
            .store
            .user(session.user)
            .await?
            .ok_or(Error::InvalidToken)?;
        Ok(Identity {
            user: user.id,
            username: user.username,
            token_hash: Some(hash),
        })
    }

    /// Signs a guest in by name: creates a guest account of that name. A name is held by the
    /// first guest (or password account) that took it, for good: reusing a guest's account
    /// by name would hand anyone who types it that guest's rooms, direct messages and
    /// history. A guest comes back with its token.
    pub async fn guest(&self, name: &str) -> Result<User> {
        if !self.limits.allow_guests {
            return Err(Error::Forbidden("guest access is disabled on this server"));
        }
        validate::username(name)?;
        // The store's unique index settles two guests racing for a name.
        self.store
            .create_user(name, None, true, Timestamp::now())
            .await
    }
}

#[async_trait]
impl Authenticator for Accounts {
    async fn authenticate(&self, credentials: &Credentials) -> Result<Identity> {
        match credentials {
            Credentials::Token(t) => self.verify_token(t).await,
            Credentials::Password { username, password } => {
                let user = self.check_password(username, password).await?;
                Ok(Identity::of(&user))
            }
            Credentials::Guest(name) => Ok(Identity::of(&self.guest(name).await?)),
        }
    }

    async fn guest_token(&self, identity: &Identity) -> Result<Option<Token>> {
        self.issue_token(identity.user).await.map(Some)
    }
}

/// **Development only.** Trusts the name the client claims — `Password` and `Guest` are both
/// taken at their word, creating the account on first use. Never expose a server using it.
#[derive(Clone)]
pub struct TrustedAuthenticator {
    store: Arc<dyn Store>,
}

impl TrustedAuthenticator {
    /// Trusts every claimed name. For examples and tests only.
    pub fn new(store: Arc<dyn Store>) -> TrustedAuthenticator {
        TrustedAuthenticator { store }
    }

    /// The user of that name, created if new.
    pub async fn user(&self, name: &str) -> Result<User> {
        validate::username(name)?;
        if let Some(c) = self.store.credentials(name).await? {
            return Ok(c.user);
        }
        match self
            .store
            .create_user(name, None, false, Timestamp::now())
            .await
        {
            Err(Error::AlreadyExists(_)) => self
                .store
                .credentials(name)
                .await?
                .map(|c| c.user)
                .ok_or(Error::UserNotFound(name.to_string())),
            other => other,
        }
    }
}

#[async_trait]
impl Authenticator for TrustedAuthenticator {
    async fn authenticate(&self, credentials: &Credentials) -> Result<Identity> {
        match credentials {
            Credentials::Password { username: n, .. } | Credentials::Guest(n) => {
                Ok(Identity::of(&self.user(n).await?))
            }
            Credentials::Token(_) => Err(Error::InvalidToken),
        }
    }
}
