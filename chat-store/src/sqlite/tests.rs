//! Tests that need the store's insides: holding the writer thread still, and making SQLite
//! fail (read-only, disk full) on the writer's own connection.

use super::values::Db;
use super::*;
use chat_core::{EntryKind, Message, RoomKind, StorageErrorKind};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

struct Fixture {
    store: Arc<SqliteStore>,
    room: RoomId,
    user: UserId,
    _dir: tempfile::TempDir,
}

async fn fixture(config: SqliteConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("t.db"), config)
            .await
            .unwrap(),
    );
    let user = store
        .create_user("alice", None, false, Timestamp(0))
        .await
        .unwrap()
        .id;
    let room = store
        .create_room(NewRoom {
            kind: RoomKind::Group,
            name: "g".into(),
            created_by: Some(user),
            at: Timestamp(0),
        })
        .await
        .unwrap()
        .id;
    Fixture {
        store,
        room,
        user,
        _dir: dir,
    }
}

fn message(room: RoomId, user: UserId, body: &str) -> NewEntry {
    NewEntry {
        room,
        at: Timestamp(1),
        kind: EntryKind::Message(Message {
            sender: Some(user),
            sender_name: "alice".into(),
            body: body.into(),
            client_msg_id: None,
        }),
    }
}

async fn eventually(mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition not reached in time");
}

/// Holds the writer thread inside a transaction until the returned sender is dropped or
/// sent to; `during` runs inside that transaction first.
async fn hold_writer(
    store: &Arc<SqliteStore>,
    during: impl FnOnce(&rusqlite::Connection) -> Result<()> + Send + 'static,
) -> (std_mpsc::Sender<()>, tokio::task::JoinHandle<Result<()>>) {
    let (release, wait) = std_mpsc::channel::<()>();
    let before = store.write_stats().commands;
    let s = store.clone();
    let held = tokio::spawn(async move {
        s.writer
            .call(move |c| {
                during(c)?;
                let _ = wait.recv();
                Ok(())
            })
            .await
    });
    eventually(|| store.write_stats().commands > before).await;
    (release, held)
}

/// Writes queued while a transaction commits all go into the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_commit_in_groups() {
    let f = fixture(SqliteConfig {
        max_batch: 64,
        ..SqliteConfig::default()
    })
    .await;
    // Counted from before the held command: the writer bumps its command and transaction
    // counters at different moments, so a snapshot taken while it holds may or may not
    // include the held transaction yet.
    let before = f.store.write_stats();
    let (release, held) = hold_writer(&f.store, |_| Ok(())).await;

    let mut appends = tokio::task::JoinSet::new();
    for i in 0..200 {
        let s = f.store.clone();
        let e = message(f.room, f.user, &format!("m{i}"));
        appends.spawn(async move { s.append(e).await });
    }
    eventually(|| f.store.writer.queued() == 200).await;
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    let mut seqs: Vec<u64> = appends
        .join_all()
        .await
        .into_iter()
        .map(|a| a.unwrap().entry.seq.0)
        .collect();
    seqs.sort();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());

    let after = f.store.write_stats();
    assert_eq!(after.commands - before.commands, 1 + 200);
    // The held transaction, then the 200 commands in batches of at most 64: at least 4
    // batches, and normally exactly 4. A sender caught between reserving its queue slot and
    // writing into it is invisible to the writer's `try_recv` (tokio's documented behaviour),
    // which can end a batch one message early, so allow a few more — but group commit must
    // still put the 200 into a handful of transactions, not 200.
    let batches = after.transactions - before.transactions - 1;
    assert!(
        (4..=8).contains(&batches),
        "{batches} transactions for 200 queued appends"
    );
}

/// Readers never wait for the writer, and never see what it has not committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_do_not_wait_for_writes_nor_see_uncommitted_ones() {
    let f = fixture(SqliteConfig::default()).await;
    f.store
        .append(message(f.room, f.user, "committed"))
        .await
        .unwrap();
    let (room, user) = (f.room, f.user);
    let (release, held) = hold_writer(&f.store, move |c| {
        ops::append(c, message(room, user, "uncommitted")).map(drop)
    })
    .await;

    let read = async {
        let latest = f.store.latest_seq(f.room).await.unwrap();
        let page = f
            .store
            .history(f.room, HistoryQuery::After(Seq::ZERO), 10)
            .await
            .unwrap();
        (latest, page.len())
    };
    let got = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("reads completed while the writer held its transaction");
    assert_eq!(got, (Seq(1), 1));

    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    assert_eq!(f.store.latest_seq(f.room).await.unwrap(), Seq(2));
}

/// Writes to a read-only database are `ReadOnly` storage errors, not acks, and the store
/// keeps answering (reads still work).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_database_is_a_read_only_error() {
    let f = fixture(SqliteConfig::default()).await;
    // Makes the writer's connection refuse writes as a read-only file would (from then on
    // even `BEGIN IMMEDIATE` is refused; the call itself may already fail at its commit).
    let _ = f
        .store
        .writer
        .call(|c| c.execute_batch("PRAGMA query_only = ON").db())
        .await;
    for body in ["refused", "refused again"] {
        let r = f.store.append(message(f.room, f.user, body)).await;
        assert!(
            matches!(
                r,
                Err(Error::Storage {
                    kind: StorageErrorKind::ReadOnly,
                    ..
                })
            ),
            "{r:?}"
        );
    }
    assert_eq!(f.store.latest_seq(f.room).await.unwrap(), Seq::ZERO);
    assert!(f.store.user(f.user).await.unwrap().is_some());
}

/// A full disk is a `Full` storage error, never an ack; what was acknowledged before stays,
/// and the log continues gap-free once there is space again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_is_a_full_error() {
    let f = fixture(SqliteConfig::default()).await;
    // Cap the file at its current size, as a full disk would.
    f.store
        .writer
        .call(|c| {
            let pages: i64 = c
                .pragma_query_value(None, "page_count", |r| r.get(0))
                .db()?;
            c.pragma_update(None, "max_page_count", pages + 2).db()
        })
        .await
        .unwrap();
    let body = "x".repeat(8 * 1024);
    let mut acked = 0u64;
    let err = loop {
        match f.store.append(message(f.room, f.user, &body)).await {
            Ok(a) => {
                acked += 1;
                assert_eq!(a.entry.seq, Seq(acked));
                assert!(acked < 100, "the cap never bit");
            }
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err,
            Error::Storage {
                kind: StorageErrorKind::Full,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(f.store.latest_seq(f.room).await.unwrap(), Seq(acked));

    f.store
        .writer
        .call(|c| c.pragma_update(None, "max_page_count", 1_000_000).db())
        .await
        .unwrap();
    let a = f
        .store
        .append(message(f.room, f.user, "space again"))
        .await
        .unwrap();
    assert_eq!(a.entry.seq, Seq(acked + 1));
    let log = f
        .store
        .history(f.room, HistoryQuery::After(Seq::ZERO), 1000)
        .await
        .unwrap();
    assert_eq!(log.len() as u64, acked + 1);
}

/// A database written by schema version 1 (idempotency index keyed by sender first) is
/// migrated on open: its entries are intact, and a retry of a message stored under version 1
/// is still recognised as one.
#[tokio::test]
async fn a_version_1_database_is_migrated_and_keeps_its_idempotency_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL").unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "application_id", schema::APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO users (id, username, username_folded, guest, created_at)
                 VALUES (1, 'alice', 'alice', 0, 0);
             INSERT INTO rooms (id, kind, name, created_by, created_at, last_seq)
                 VALUES (1, 'group', 'g', 1, 0, 1);
             INSERT INTO members (room_id, user_id, role, joined_at) VALUES (1, 1, 'owner', 0);
             INSERT INTO entries (room_id, seq, at, kind, sender, sender_name, body, client_msg_id)
                 VALUES (1, 1, 5, 1, 1, 'alice', 'from v1', 'c-1');",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path, SqliteConfig::default())
        .await
        .unwrap();
    let (user, room) = (UserId(1), RoomId(1));
    let retry = |cmid: &str, body: &str| NewEntry {
        room,
        at: Timestamp(6),
        kind: EntryKind::Message(Message {
            sender: Some(user),
            sender_name: "alice".into(),
            body: body.into(),
            client_msg_id: Some(cmid.into()),
        }),
    };
    let again = store.append(retry("c-1", "retried")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.entry.seq, Seq(1));
    assert_eq!(
        again.entry.kind,
        EntryKind::Message(Message {
            sender: Some(user),
            sender_name: "alice".into(),
            body: "from v1".into(),
            client_msg_id: Some("c-1".into()),
        })
    );
    let new = store.append(retry("c-2", "new")).await.unwrap();
    assert!(!new.duplicate);
    assert_eq!(new.entry.seq, Seq(2));
    drop(store);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::LATEST);
    let index: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'entries_idempotency'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(index.contains("(client_msg_id, sender)"), "{index}");
}
