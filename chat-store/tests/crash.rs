//! Crash durability: a child process appends as fast as it can from many concurrent tasks
//! (so group commit batches), printing each acknowledged append; it is killed with SIGKILL
//! at a random moment; the database is reopened and checked. Repeated on the same file, so
//! later rounds also start from a file recovered after a kill.
//!
//! The child is this very test binary, re-executed with `CHILD_ENV` set: the `crash_child`
//! test is a no-op in a normal run and the appender in the child.
//!
//! Checked after every kill:
//! - every append the child reported as acknowledged is in the log, at the seq it was given,
//!   with its body and client id;
//! - every room's seqs are exactly `1..=latest_seq` (contiguous, no gap, nothing twice);
//! - no client message id is stored twice;
//! - `PRAGMA integrity_check` says `ok`.

use chat_core::store::{MAX_HISTORY_PAGE, NewRoom};
use chat_core::{
    EntryKind, HistoryQuery, LogEntry, Message, NewEntry, RoomId, RoomKind, Seq, Store, Timestamp,
    UserId,
};
use chat_store::{SqliteConfig, SqliteStore};
use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "CHAT_STORE_CRASH_CHILD_DB";
const ROUND_ENV: &str = "CHAT_STORE_CRASH_ROUND";
const ROUNDS: usize = 20;
const ROOMS: u64 = 3;
const APPENDERS: usize = 64;

/// A random number without a dependency: std's `RandomState` is randomly keyed per instance.
fn random_below(n: u64) -> u64 {
    RandomState::new().hash_one(0u8) % n
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// In the child: append from `APPENDERS` tasks until killed, printing `room seq cmid` for
/// each acknowledged append. In a normal test run: nothing.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let round: usize = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    runtime().block_on(async move {
        let store = Arc::new(
            SqliteStore::open(&path, SqliteConfig::default())
                .await
                .expect("child: open"),
        );
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..APPENDERS {
            let store = store.clone();
            tasks.spawn(async move {
                // Bounded, in case the parent never kills us.
                for i in 0..1_000_000usize {
                    let room = RoomId(1 + (t + i) as u64 % ROOMS);
                    let cmid = format!("r{round}-t{t}-{i}");
                    let a = store
                        .append(NewEntry {
                            room,
                            at: Timestamp(i as i64),
                            kind: EntryKind::Message(Message {
                                sender: Some(UserId(1)),
                                sender_name: "writer".into(),
                                body: format!("body of {cmid}"),
                                client_msg_id: Some(cmid.clone()),
                            }),
                        })
                        .await
                        .expect("child: append");
                    assert!(!a.duplicate);
                    // One write per line, so a kill can only cut the last line short.
                    let line = format!("{} {} {cmid}\n", room.0, a.entry.seq.0);
                    let mut out = std::io::stdout().lock();
                    out.write_all(line.as_bytes()).unwrap();
                    out.flush().unwrap();
                }
            });
        }
        tasks.join_all().await;
    });
}

/// Every entry of a room, read forwards page by page.
async fn whole_log(store: &SqliteStore, room: RoomId) -> Vec<LogEntry> {
    let mut all: Vec<LogEntry> = Vec::new();
    loop {
        let after = all.last().map_or(Seq::ZERO, |e| e.seq);
        let page = store
            .history(room, HistoryQuery::After(after), MAX_HISTORY_PAGE)
            .await
            .unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

fn cmid(e: &LogEntry) -> &str {
    let EntryKind::Message(m) = &e.kind;
    m.client_msg_id.as_deref().unwrap()
}

/// Reopens the database and checks it against everything acknowledged so far.
async fn verify(path: &Path, acked: &BTreeMap<(u64, u64), String>) -> u64 {
    let store = SqliteStore::open(path, SqliteConfig::default())
        .await
        .expect("reopen after kill");
    let mut ids = HashSet::new();
    let mut total = 0;
    for r in 1..=ROOMS {
        let room = RoomId(r);
        let log = whole_log(&store, room).await;
        let latest = store.latest_seq(room).await.unwrap();
        let seqs: Vec<u64> = log.iter().map(|e| e.seq.0).collect();
        assert_eq!(
            seqs,
            (1..=latest.0).collect::<Vec<_>>(),
            "room {r}: seqs must be exactly 1..=latest"
        );
        for e in &log {
            let id = cmid(e);
            assert!(ids.insert(id.to_string()), "{id} stored twice");
            let EntryKind::Message(m) = &e.kind;
            assert_eq!(m.body, format!("body of {id}"));
        }
        for ((ar, seq), id) in acked.range((r, 0)..=(r, u64::MAX)) {
            let stored = log
                .get(*seq as usize - 1)
                .unwrap_or_else(|| panic!("acknowledged {id} at {ar}/{seq} is missing"));
            assert_eq!(cmid(stored), id, "acknowledged {id} at {ar}/{seq}");
        }
        total += latest.0;
    }
    drop(store);
    let conn = rusqlite::Connection::open(path).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    total
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let rt = runtime();
    rt.block_on(async {
        let store = SqliteStore::open(&path, SqliteConfig::default())
            .await
            .unwrap();
        let writer = store
            .create_user("writer", None, false, Timestamp(0))
            .await
            .unwrap();
        assert_eq!(writer.id, UserId(1));
        for r in 1..=ROOMS {
            let room = store
                .create_room(NewRoom {
                    kind: RoomKind::Group,
                    name: format!("room {r}"),
                    created_by: Some(writer.id),
                    at: Timestamp(0),
                })
                .await
                .unwrap();
            assert_eq!(room.id, RoomId(r));
        }
    });

    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut rounds_with_acks = 0;
    let mut stored = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        // Anywhere from during start-up and recovery to well into the appends.
        std::thread::sleep(Duration::from_millis(5 + random_below(95)));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let lines = reader.join().unwrap();

        let mut this_round = 0;
        for line in &lines {
            // Skip the test harness's own output. (Lines are never cut short: each is one
            // `write` of far less than PIPE_BUF bytes to a pipe, which is atomic.)
            let parts: Vec<&str> = line.split(' ').collect();
            let [room, seq, id] = parts[..] else { continue };
            let (Ok(room), Ok(seq)) = (room.parse::<u64>(), seq.parse::<u64>()) else {
                continue;
            };
            assert!(id.starts_with(&format!("r{round}-t")), "{line}");
            let previous = acked.insert((room, seq), id.to_string());
            assert!(previous.is_none(), "seq {room}/{seq} acknowledged twice");
            this_round += 1;
        }
        if this_round > 0 {
            rounds_with_acks += 1;
        }
        stored = rt.block_on(verify(&path, &acked));
    }
    assert!(
        rounds_with_acks >= ROUNDS / 4,
        "only {rounds_with_acks} of {ROUNDS} rounds got as far as acknowledging an append"
    );
    eprintln!(
        "{ROUNDS} kills: {} acknowledged appends checked ({stored} stored) in {:?}",
        acked.len(),
        started.elapsed()
    );
}
