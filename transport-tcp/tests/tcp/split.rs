//! The same bytes give the same results however TCP cuts them: one write, one byte per write,
//! or two writes split at every byte boundary — in both modes.

use crate::common::*;
use chat_core::protocol::{ClientFrame, HelloAuth, ServerFrame};
use chat_core::{Codec, Response, RoomId, RoomKind, SessionId, Timestamp};
use futures_util::StreamExt;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Writes `bytes` in the given pieces, pausing after each so that the server reads them
/// separately.
async fn write_in(tcp: &mut TcpStream, bytes: &[u8], cuts: &[usize]) {
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        tcp.write_all(&bytes[from..cut]).await.unwrap();
        tcp.flush().await.unwrap();
        from = cut;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

const LINE_SCRIPT: &str = "/nick alice\r\n/create lobby\nhello there\n/who\n\
                           /history 5\n/rooms\n/bogus\nbye now\n/quit\n";

/// Runs the line script on a fresh server, written in pieces cut at `cuts`; returns the
/// whole transcript.
async fn line_transcript(script: &[u8], cuts: &[usize]) -> String {
    let h = Harness::start().await;
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    write_in(&mut tcp, script, cuts).await;
    let mut c = LineClient::over(tcp);
    let transcript = String::from_utf8(c.raw_until_closed().await).unwrap();
    // The guest's token is random; the rest must match byte for byte.
    transcript.split_inclusive("\r\n").map(mask_token).collect()
}

#[tokio::test]
async fn line_mode_gives_the_same_transcript_however_the_input_is_cut() {
    let script = LINE_SCRIPT.as_bytes();
    let whole = line_transcript(script, &[]).await;
    // A sanity check that the script did what it says.
    for want in [
        "* signed in as alice\r\n",
        "* created public room lobby; you are now talking in lobby\r\n",
        "[lobby] alice: hello there\r\n",
        "*   alice (owner, online)\r\n",
        "! unknown command /bogus; /help lists the commands\r\n",
        "[lobby] alice: bye now\r\n",
        "* bye\r\n",
    ] {
        assert!(whole.contains(want), "{want:?} missing from:\n{whole}");
    }

    let every_byte: Vec<usize> = (1..script.len()).collect();
    assert_eq!(line_transcript(script, &every_byte).await, whole);

    for cut in 1..script.len() {
        assert_eq!(
            line_transcript(script, &[cut]).await,
            whole,
            "cut after byte {cut}"
        );
    }
}

fn binary_script() -> Vec<u8> {
    let room = RoomId(1);
    let mut out = frame(Some(1), hello(HelloAuth::Guest("alice".into())));
    for (id, f) in [
        (
            2,
            ClientFrame::CreateRoom {
                name: "lobby".into(),
                kind: RoomKind::Public,
            },
        ),
        (
            3,
            ClientFrame::Subscribe {
                room,
                since_seq: None,
            },
        ),
        (
            4,
            ClientFrame::Send {
                room,
                body: "one".into(),
                client_msg_id: None,
            },
        ),
        (
            5,
            ClientFrame::Send {
                room,
                body: "two ✓".into(),
                client_msg_id: Some("c-2".into()),
            },
        ),
        (
            6,
            ClientFrame::History {
                room,
                before: None,
                after: None,
                limit: None,
            },
        ),
        (7, ClientFrame::Members { room }),
        (8, ClientFrame::Ping),
    ] {
        out.extend(frame(Some(id), f));
    }
    out
}

/// What may differ between two runs: session ids, a guest's token, and timestamps.
fn normalize(mut r: Response) -> Response {
    let fix = |e: &mut chat_core::protocol::Entry| e.at = Timestamp(0);
    match &mut r.frame {
        ServerFrame::Welcome { session, token, .. } => {
            *session = SessionId(0);
            *token = token.as_ref().map(|_| "a token".into());
        }
        ServerFrame::Message(e) => fix(e),
        ServerFrame::History { entries, .. } | ServerFrame::Subscribed { entries, .. } => {
            entries.iter_mut().for_each(fix)
        }
        _ => {}
    }
    r
}

/// Runs the binary script on a fresh server, written in pieces cut at `cuts`; returns every
/// frame up to the reply to the last request.
async fn binary_responses(script: &[u8], cuts: &[usize]) -> Vec<Response> {
    let h = Harness::start().await;
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    write_in(&mut tcp, script, cuts).await;
    let mut c = BinClient::over(tcp);
    let mut out = Vec::new();
    loop {
        let bytes = tokio::time::timeout(PATIENCE, c.io.next())
            .await
            .expect("a reply")
            .expect("the stream goes on")
            .unwrap();
        let r = normalize(Codec::Postcard.decode_response(&bytes).unwrap());
        let last = r.id == Some(8);
        out.push(r);
        if last {
            return out;
        }
    }
}

#[tokio::test]
async fn binary_mode_gives_the_same_frames_however_the_input_is_cut() {
    let script = binary_script();
    let whole = binary_responses(&script, &[]).await;
    let replies: Vec<u64> = whole.iter().filter_map(|r| r.id).collect();
    assert_eq!(replies, [1, 2, 3, 4, 5, 6, 7, 8], "{whole:#?}");
    assert!(
        whole
            .iter()
            .all(|r| !matches!(r.frame, ServerFrame::Error { .. })),
        "{whole:#?}"
    );

    let every_byte: Vec<usize> = (1..script.len()).collect();
    assert_eq!(binary_responses(&script, &every_byte).await, whole);

    for cut in 1..script.len() {
        assert_eq!(
            binary_responses(&script, &[cut]).await,
            whole,
            "cut after byte {cut}"
        );
    }
}
