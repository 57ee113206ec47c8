//! A real browser: headless Chromium driven through chromedriver (WebDriver) with fantoccini.
//!
//! Two users register in two browser sessions, one creates a room and an invite link, the
//! other joins by the link, they exchange messages live (with typing and presence), a reload
//! shows the history, and signing out works.
//!
//! Needs Debian's `chromium` and `chromium-driver` packages (or `CHROME_BIN` and
//! `CHROMEDRIVER` pointing at a browser and its driver). Without them the test reports that it
//! was skipped, and why — unless `CI` is set, where their absence is a failure.

use crate::common::*;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where screenshots of the room page go, for people (and reviews) to look at.
const SCREENSHOT: &str = "/tmp/chat-server-room.png";
const SCREENSHOT_HOME: &str = "/tmp/chat-server-home.png";
const SCREENSHOT_NARROW: &str = "/tmp/chat-server-room-narrow.png";

#[tokio::test]
async fn two_people_chat_in_real_browsers() {
    let Some((chrome, driver)) = browser_or_skip() else {
        return;
    };
    // carol posts 60 messages over HTTP below, more than the default burst of writes (40).
    let s = start(&["--request-burst", "100"]).await;
    let driver = Driver::start(&driver).await;
    let alice = Browser::open(&driver, &chrome).await;
    let bob = Browser::open(&driver, &chrome).await;

    // Alice registers and creates a room.
    alice.goto(&s.url("/auth")).await;
    alice.register("alice").await;
    alice.wait_for(Locator::Id("create-room")).await;
    alice.fill("#room-name", "Book club").await;
    alice.click("#create-room button[type=submit]").await;
    alice.wait_for(Locator::Css("#room #conn.live")).await;
    assert_eq!(alice.text("#room-title").await, "Book club");

    // ... and an invite link, which bob opens: sign-in first, then straight into the room.
    alice.click("#make-invite").await;
    let input = alice
        .wait_for(Locator::Css("#invite-out:not([hidden]) #invite-link"))
        .await;
    let link = input.prop("value").await.unwrap().unwrap();
    assert!(link.starts_with(&s.url("/invite/")), "{link}");
    bob.goto(&link).await;
    bob.wait_for(Locator::Css("#auth-form")).await;
    bob.register("bob").await;
    bob.wait_for(Locator::Css("#room #conn.live")).await;
    assert_eq!(bob.text("#room-title").await, "Book club");

    // Presence: alice sees bob come online.
    alice
        .wait_for(Locator::XPath(
            "//ul[@id='members']/li[contains(@class,'online')][contains(., 'bob')]",
        ))
        .await;

    // Alice sends with Enter; bob sees it live.
    alice.fill("#message", "Hello Bob!").await;
    alice.keys("#message", &Key::Enter.to_string()).await;
    bob.wait_for(Locator::XPath(&message_containing("Hello Bob!")))
        .await;

    // Bob types (alice sees the indicator), then sends with the button.
    bob.fill("#message", "Hi Alice, ").await;
    alice
        .wait_for(Locator::XPath(
            "//p[@id='typing'][contains(., 'bob is typing')]",
        ))
        .await;
    bob.keys("#message", "what are we reading?").await;
    bob.click("#send").await;
    alice
        .wait_for(Locator::XPath(&message_containing("what are we reading?")))
        .await;
    // Sent messages are confirmed (no longer pending) on the sender's side.
    bob.wait_for(Locator::XPath(
        "//ol[@id='messages']/li[@data-seq='2'][not(contains(@class,'pending'))]",
    ))
    .await;

    // A reload shows the history, rendered by the server.
    bob.client.refresh().await.unwrap();
    bob.wait_for(Locator::Css("#room #conn.live")).await;
    let shown: Vec<String> = bob.texts("#messages li.msg .body").await;
    assert_eq!(shown, ["Hello Bob!", "Hi Alice, what are we reading?"]);

    // The home page lists the room. Screenshots for a human to look at: the room page, the
    // home page, and the room on a phone-sized window.
    std::fs::write(SCREENSHOT, alice.client.screenshot().await.unwrap()).unwrap();
    bob.goto(&s.url("/")).await;
    bob.wait_for(Locator::XPath(
        "//ul[@id='room-list']//a[contains(., 'Book club')]",
    ))
    .await;
    std::fs::write(SCREENSHOT_HOME, bob.client.screenshot().await.unwrap()).unwrap();
    alice.client.set_window_size(390, 844).await.unwrap();
    alice.wait_for(Locator::Css("#room #conn.live")).await;
    std::fs::write(SCREENSHOT_NARROW, alice.client.screenshot().await.unwrap()).unwrap();
    eprintln!("screenshots: {SCREENSHOT}, {SCREENSHOT_HOME}, {SCREENSHOT_NARROW}");

    // Older history loads on demand: carol (through the API) fills the room beyond one page;
    // bob's room page shows the latest 50 and loads the rest from the JSON API.
    let carol = s.register("carol").await;
    let code = link.rsplit('/').next().unwrap();
    let (_, joined) = s
        .post(
            &format!("/api/invites/{code}/redeem"),
            Some(&carol),
            json!({}),
        )
        .await;
    let room = joined["room"]["id"].as_u64().unwrap();
    for i in 1..=60 {
        s.post(
            &format!("/api/rooms/{room}/messages"),
            Some(&carol),
            json!({"body": format!("filler {i}")}),
        )
        .await;
    }
    bob.goto(&s.url(&format!("/chat/{room}"))).await;
    bob.wait_for(Locator::Css("#room #conn.live")).await;
    assert_eq!(bob.texts("#messages li.msg").await.len(), 50);
    bob.click("#load-older").await;
    bob.wait_for(Locator::XPath(&message_containing("Hello Bob!")))
        .await;
    assert_eq!(bob.texts("#messages li.msg").await.len(), 62);
    bob.wait_for(Locator::Css("#load-older[hidden]")).await;

    // Signing out: back to the sign-in page, and the session is gone.
    bob.click("#sign-out").await;
    bob.wait_for(Locator::Css("#auth-form")).await;
    bob.goto(&s.url("/")).await;
    bob.wait_for(Locator::Css("#auth-form")).await;
    // Alice is unaffected and can still post.
    alice.fill("#message", "still here").await;
    alice.keys("#message", &Key::Enter.to_string()).await;
    alice
        .wait_for(Locator::XPath(
            "//ol[@id='messages']/li[@data-seq][contains(., 'still here')]",
        ))
        .await;

    alice.client.close().await.unwrap();
    bob.client.close().await.unwrap();
    driver.stop().await;
    s.stop().await;
}

/// An XPath for a message whose text contains `text` (no quotes in it).
fn message_containing(text: &str) -> String {
    format!("//ol[@id='messages']/li[contains(., '{text}')]")
}

/// The browser and driver binaries, or `None` (after saying why) where they are missing and
/// this is not CI.
fn browser_or_skip() -> Option<(PathBuf, PathBuf)> {
    let chrome = std::env::var_os("CHROME_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            ["chromium", "chromium-browser", "google-chrome"]
                .iter()
                .find_map(|n| which(n))
        });
    let driver = std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| which("chromedriver"));
    match (chrome, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        (c, d) => {
            let missing = [
                c.is_none()
                    .then_some("chromium (Debian package `chromium`)"),
                d.is_none()
                    .then_some("chromedriver (Debian package `chromium-driver`)"),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" and ");
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
            if ci {
                panic!("the browser test needs {missing}, which CI must install");
            }
            // Straight to the stderr handle, not `eprintln!`: libtest captures the macros'
            // output of passing tests, and a skip must be visible in a plain `cargo test`.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED two_people_chat_in_real_browsers: {missing} not found on PATH \
                 (install with `apt-get install chromium chromium-driver`, or set CHROME_BIN \
                 and CHROMEDRIVER)"
            );
            None
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// chromedriver on a free loopback port. It runs in a process group of its own, with the
/// browsers it starts; the whole group is ended when this is stopped or dropped, so a failing
/// test leaves no browser behind.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start(path: &Path) -> Driver {
        let mut child = Command::new(path)
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        // It says which port it chose once it listens: "... started successfully on port N."
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    return rest.trim_end_matches('.').trim().parse::<u16>().unwrap();
                }
            }
            panic!("chromedriver exited before listening");
        })
        .await
        .expect("chromedriver listens in time");
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// SIGTERM to chromedriver's process group (its id is the group's).
    fn end_group(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }

    async fn stop(mut self) {
        self.end_group();
        let _ = tokio::time::timeout(PATIENCE, self.child.wait()).await;
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.end_group();
        }
    }
}

/// One browser session with its own fresh profile.
struct Browser {
    client: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn open(driver: &Driver, chrome: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-quic".to_string(),
            "--no-first-run".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            "--disable-dev-shm-usage".to_string(),
            "--window-size=1200,800".to_string(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chrome, "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("a browser session");
        Browser {
            client,
            _profile: profile,
        }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn wait_for(&self, what: Locator<'_>) -> fantoccini::elements::Element {
        let shown = format!("{what:?}");
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(what)
            .await
        {
            Ok(e) => e,
            Err(e) => {
                let html = self.client.source().await.unwrap_or_default();
                panic!("waited in vain for {shown}: {e}\npage:\n{html}");
            }
        }
    }

    async fn fill(&self, css: &str, text: &str) {
        let e = self.wait_for(Locator::Css(css)).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    async fn keys(&self, css: &str, text: &str) {
        self.wait_for(Locator::Css(css))
            .await
            .send_keys(text)
            .await
            .unwrap();
    }

    async fn click(&self, css: &str) {
        self.wait_for(Locator::Css(css))
            .await
            .click()
            .await
            .unwrap();
    }

    async fn text(&self, css: &str) -> String {
        self.wait_for(Locator::Css(css)).await.text().await.unwrap()
    }

    async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.client.find_all(Locator::Css(css)).await.unwrap() {
            out.push(e.text().await.unwrap());
        }
        out
    }

    /// Registers through the sign-in page.
    async fn register(&self, name: &str) {
        self.fill("#username", name).await;
        self.fill("#password", "correct horse").await;
        self.click("#register").await;
    }
}
