//! The README's `nc` session over real sockets: Alice creates and joins `lobby`, Bob joins it
//! and sees `alice: hello`; leaving a channel stops its messages.

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Safety net only: every wait below ends when the expected line arrives.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One `nc` session: what it types, and the lines it prints.
struct Nc {
    lines: Lines<BufReader<OwnedReadHalf>>,
    input: OwnedWriteHalf,
}

impl Nc {
    async fn connect(addr: &str) -> Nc {
        let (read, input) = TcpStream::connect(addr).await.unwrap().into_split();
        Nc {
            lines: BufReader::new(read).lines(),
            input,
        }
    }

    async fn type_line(&mut self, line: &str) {
        self.input
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// The lines printed up to and including `wanted` (which must come).
    async fn until(&mut self, wanted: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let read = async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                let line = line.trim_end_matches('\r').to_string();
                seen.push(line.clone());
                if line == wanted {
                    return;
                }
            }
            panic!("connection closed before {wanted:?}; saw {seen:?}");
        };
        if tokio::time::timeout(TIMEOUT, read).await.is_err() {
            panic!("no {wanted:?} in time");
        }
        seen
    }
}

async fn start() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(tcp_chat::run(listener, std::future::pending()));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_and_bob_in_the_lobby() {
    let addr = start().await;

    let mut alice = Nc::connect(&addr).await;
    alice.type_line("/nick alice").await;
    let greeting = alice.until("* signed in as alice").await;
    assert_eq!(greeting[0], "* Welcome to tcp-chat.");
    alice.type_line("/create lobby").await;
    alice
        .until("* created public room lobby; you are now talking in lobby")
        .await;
    alice.type_line("/join lobby").await;
    alice.until("* you are now talking in lobby").await;

    let mut bob = Nc::connect(&addr).await;
    bob.type_line("/nick bob").await;
    bob.until("* signed in as bob").await;
    bob.type_line("/join lobby").await;
    bob.until("* joined lobby; you are now talking in lobby")
        .await;

    alice.type_line("hello").await;
    let seen = bob.until("[lobby] alice: hello").await;
    assert_eq!(seen, ["[lobby] alice: hello"], "nothing else before it");
    alice.until("[lobby] alice: hello").await; // her own line, as the room shows it

    // Bob answers; then leaves the channel and no longer gets its messages.
    bob.type_line("hi alice").await;
    alice.until("[lobby] bob: hi alice").await;
    bob.type_line("/leave").await;
    bob.until("* you left lobby").await;
    alice.type_line("anyone?").await;
    // Once Alice sees her line, it has been delivered to every subscriber of the channel.
    alice.until("[lobby] alice: anyone?").await;
    bob.type_line("/join lobby").await;
    let seen = bob
        .until("* joined lobby; you are now talking in lobby")
        .await;
    assert!(!seen.iter().any(|l| l.contains("anyone?")), "{seen:?}");

    bob.type_line("/quit").await;
    bob.until("* bye").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_lines_before_a_channel_are_explained() {
    let addr = start().await;
    let mut carol = Nc::connect(&addr).await;
    carol.type_line("hello?").await;
    carol
        .until("! sign in first: /login <user> <password> or /nick <name>")
        .await;
    carol.type_line("/nick carol").await;
    carol.until("* signed in as carol").await;
    carol.type_line("hello?").await;
    carol
        .until("! you are not in a room: /join <room> or /create <room> first")
        .await;
    carol.type_line("/join nowhere").await;
    let line = tokio::time::timeout(TIMEOUT, carol.lines.next_line()).await;
    let line = line.expect("an answer in time").unwrap().unwrap();
    assert!(line.starts_with("! ") && line.contains("nowhere"), "{line}");
}
