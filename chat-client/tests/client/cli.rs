//! The chat-cli loop, driven with scripted input and captured output against real servers.

use crate::common::*;
use chat_client::cli::{self, CliOptions, Console, Exit};
use chat_client::{Auth, Event};
use chat_core::RoomKind;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// A console whose input is a channel and whose output is captured line by line.
struct Script {
    input: mpsc::UnboundedReceiver<String>,
    output: mpsc::UnboundedSender<String>,
    prompt: Arc<Mutex<String>>,
}

impl Console for Script {
    async fn read_line(&mut self) -> Option<String> {
        self.input.recv().await
    }

    fn print(&mut self, line: &str) {
        let _ = self.output.send(line.to_string());
    }

    fn set_prompt(&mut self, prompt: &str) {
        *self.prompt.lock().unwrap() = prompt.to_string();
    }
}

/// The test's side of the console.
struct User {
    input: mpsc::UnboundedSender<String>,
    output: mpsc::UnboundedReceiver<String>,
    prompt: Arc<Mutex<String>>,
    /// Every line printed so far.
    seen: Vec<String>,
}

impl User {
    fn type_line(&self, line: &str) {
        self.input.send(line.to_string()).unwrap();
    }

    /// Waits for a printed line containing `needle`; returns it.
    async fn expect(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(PATIENCE, async {
            loop {
                let line = self.output.recv().await.expect("the CLI is running");
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no line with {needle:?}; seen: {:#?}", self.seen))
    }

    async fn next_line(&mut self) -> String {
        let line = tokio::time::timeout(PATIENCE, self.output.recv())
            .await
            .expect("a line in time")
            .expect("the CLI is running");
        self.seen.push(line.clone());
        line
    }

    async fn expect_prompt(&self, needle: &str) {
        let ok = tokio::time::timeout(PATIENCE, async {
            while !self.prompt.lock().unwrap().contains(needle) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            ok.is_ok(),
            "prompt {:?} never contained {needle:?}",
            self.prompt.lock().unwrap()
        );
    }
}

fn console() -> (Script, User) {
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let prompt = Arc::new(Mutex::new(String::new()));
    (
        Script {
            input: in_rx,
            output: out_tx,
            prompt: prompt.clone(),
        },
        User {
            input: in_tx,
            output: out_rx,
            prompt,
            seen: Vec::new(),
        },
    )
}

async fn a_session(wire: Wire) {
    let s = Servers::start().await;
    s.engine
        .accounts()
        .register("alice", "correct horse")
        .await
        .unwrap();
    let (_, tb) = s.user("bob").await;
    let (bob, mut bob_events) = connect(wire, s.addr(wire), Auth::Token(tb)).await;
    let lobby = bob.create_room("lobby", RoomKind::Public).await.unwrap();
    bob.subscribe(lobby.id, None).await.unwrap();
    bob.send(lobby.id, "earlier, before alice came")
        .await
        .unwrap();

    // Alice's CLI reaches the server through a proxy, to be cut later.
    let proxy = Proxy::start(s.addr(wire)).await;
    let login = Auth::Login {
        username: "alice".into(),
        password: "correct horse".into(),
    };
    let (alice, mut events) = connect(wire, proxy.addr, login).await;
    let (mut script, mut user) = console();
    let options = CliOptions::default();

    let session = async {
        user.expect("connected as alice").await;
        user.expect("you are in no room yet").await;

        user.type_line("/frobnicate");
        user.expect("! unknown command /frobnicate").await;

        user.type_line("hello?");
        user.expect("you are not in a room").await;

        // Joining shows the history, and switches the prompt.
        user.type_line("/join lobby");
        user.expect("* now in lobby").await;
        user.expect("[lobby] bob: earlier, before alice came").await;
        user.expect_prompt("lobby> ").await;
        let ev = wait_for(&mut bob_events, |e| matches!(e, Event::Presence { .. })).await;
        assert!(matches!(ev, Event::Presence { online: true, .. }));

        // A plain line goes to the current room; the room echoes it.
        user.type_line("hi bob");
        user.expect("[lobby] alice: hi bob").await;
        assert_eq!(next_message(&mut bob_events).await.body, "hi bob");

        // Other users' text cannot drive the terminal.
        bob.send(lobby.id, "\x1b[2J\x1b]0;pwned\x07gotcha\r")
            .await
            .unwrap();
        let line = user.expect("gotcha").await;
        assert!(line.starts_with("[lobby] bob: "), "{line}");
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");

        // Typing shows in the prompt, then goes away when bob's message arrives.
        bob.typing(lobby.id);
        user.expect_prompt("bob is typing").await;
        bob.send(lobby.id, "multi\nline").await.unwrap();
        user.expect("[lobby] bob: multi").await;
        user.expect("    line").await;
        user.expect_prompt("lobby> ").await;
        assert_eq!(&*user.prompt.lock().unwrap(), "lobby> ");

        user.type_line("/who");
        user.expect("lobby: 2 members, 2 online").await;
        let mut who = vec![user.next_line().await, user.next_line().await];
        who.sort();
        assert_eq!(who, ["  alice (member) online", "  bob (owner) online"]);

        user.type_line("/rooms");
        user.expect("lobby #1 public").await;

        user.type_line("/history 2");
        user.expect("* last 2 messages in lobby").await;
        user.expect("pwned").await;
        user.expect("[lobby] bob: multi").await;

        user.type_line("/msg bob psst");
        user.expect("[alice & bob] alice: psst").await;
        let ev = wait_for(&mut bob_events, |e| matches!(e, Event::Room(_))).await;
        assert!(matches!(ev, Event::Room(r) if r.kind == RoomKind::Direct));

        user.type_line("/create side room");
        user.expect("* now in side room").await;
        user.expect_prompt("side room> ").await;
        user.type_line("/join lobby");
        user.expect_prompt("lobby> ").await;

        // The connection drops: the user is told, and told again when it is back.
        proxy.cut();
        user.expect("* connection lost").await;
        user.expect("* reconnected, resumed 3 rooms").await;
        bob.send(lobby.id, "welcome back").await.unwrap();
        user.expect("[lobby] bob: welcome back").await;

        // Bob leaves; alice sees it. Then she leaves the side room.
        bob.leave(lobby.id).await.unwrap();
        user.expect("bob left lobby").await;
        user.type_line("/leave side room");
        user.expect("* you left side room").await;

        user.type_line("/quit");
    };
    let (exit, ()) = tokio::join!(
        cli::run(&alice, &mut events, &mut script, &options),
        session
    );
    assert_eq!(exit.unwrap(), Exit::Quit);
}

#[tokio::test]
async fn a_cli_session_over_tcp() {
    a_session(Wire::Tcp).await;
}

#[tokio::test]
async fn a_cli_session_over_websocket() {
    a_session(Wire::WsJson).await;
}

#[tokio::test]
async fn the_cli_ends_when_the_session_is_revoked_or_the_input_ends() {
    let s = Servers::start().await;
    let (uid, token) = s.user("carol").await;
    let (carol, mut events) = connect(Wire::Tcp, s.tcp_addr, Auth::Token(token.clone())).await;
    let (mut script, mut user) = console();
    let options = CliOptions::default();
    let session = async {
        user.expect("connected as carol").await;
        s.engine.close_user_sessions(uid).await;
        user.expect("* disconnected: the server revoked the session")
            .await;
    };
    let (exit, ()) = tokio::join!(
        cli::run(&carol, &mut events, &mut script, &options),
        session
    );
    assert_eq!(
        exit.unwrap(),
        Exit::Closed(chat_client::CloseReason::Revoked)
    );

    let (carol, mut events) = connect(Wire::Tcp, s.tcp_addr, Auth::Token(token)).await;
    let (mut script, user) = console();
    drop(user.input);
    let exit = cli::run(&carol, &mut events, &mut script, &options).await;
    assert_eq!(exit.unwrap(), Exit::EndOfInput);
}
