//! What only a durable store has to get right: files it must refuse (and leave alone),
//! data surviving a reopen, the on-disk settings, and lock contention with another process.

mod support;

use chat_core::store::{NewRoom, Store};
use chat_core::{
    EntryKind, Error, HistoryQuery, Invite, Message, NewEntry, Role, RoomId, RoomKind, Seq,
    StorageErrorKind, Timestamp, User,
};
use chat_store::{OpenError, SqliteConfig, SqliteStore, Synchronous};
use std::path::Path;
use std::time::Duration;

fn ts(ms: i64) -> Timestamp {
    Timestamp(1_700_000_000_000 + ms)
}

fn message(room: RoomId, user: &User, body: &str, cmid: Option<&str>) -> NewEntry {
    NewEntry {
        room,
        at: ts(5),
        kind: EntryKind::Message(Message {
            sender: Some(user.id),
            sender_name: user.username.clone(),
            body: body.into(),
            client_msg_id: cmid.map(str::to_string),
        }),
    }
}

/// Every file in `dir`, with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Opening `path` fails with the given kind, and nothing in its directory changed (no byte
/// of the file, no `-wal`/`-shm`/`-journal` left behind).
async fn refused(path: &Path, kind: StorageErrorKind) -> OpenError {
    let dir = path.parent().unwrap();
    let before = snapshot(dir);
    let err = SqliteStore::open(path, SqliteConfig::default())
        .await
        .expect_err("the file must be refused");
    assert_eq!(err.kind(), kind, "{err}");
    let as_core: Error = SqliteStore::open(path, SqliteConfig::default())
        .await
        .unwrap_err()
        .into();
    assert!(
        matches!(&as_core, Error::Storage { kind: k, .. } if *k == kind),
        "{as_core:?}"
    );
    assert_eq!(snapshot(dir), before, "the directory was touched");
    err
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("garbage.db");
    let bytes: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&long, &bytes).unwrap();
    let err = refused(&long, StorageErrorKind::Corrupt).await;
    assert!(matches!(err, OpenError::NotADatabase { .. }), "{err:?}");
    assert!(err.to_string().contains("garbage.db"), "{err}");
    assert_eq!(std::fs::read(&long).unwrap(), bytes);

    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "these are my notes, not a database\n".repeat(20)).unwrap();
    refused(&text, StorageErrorKind::Corrupt).await;

    // The right magic string followed by garbage.
    let dir = tempfile::tempdir().unwrap();
    let damaged = dir.path().join("damaged.db");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend((0..8192u32).map(|i| (i.wrapping_mul(40_503) >> 7) as u8));
    std::fs::write(&damaged, &bytes).unwrap();
    refused(&damaged, StorageErrorKind::Corrupt).await;

    // A valid header on a damaged first page gets past the header check; SQLite itself must
    // then refuse it, still without touching anything.
    let dir = tempfile::tempdir().unwrap();
    let damaged = dir.path().join("damaged.db");
    let conn = rusqlite::Connection::open(&damaged).unwrap();
    conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(conn);
    let mut bytes = std::fs::read(&damaged).unwrap();
    for (i, b) in bytes.iter_mut().enumerate().take(4096).skip(100) {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0];
    }
    std::fs::write(&damaged, &bytes).unwrap();
    let err = refused(&damaged, StorageErrorKind::Corrupt).await;
    assert!(matches!(err, OpenError::NotADatabase { .. }), "{err:?}");
    assert_eq!(std::fs::read(&damaged).unwrap(), bytes);
}

#[tokio::test]
async fn a_database_of_a_newer_schema_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    {
        // A store as some future version would leave it.
        let store = SqliteStore::open(&path, SqliteConfig::default())
            .await
            .unwrap();
        store
            .create_user("alice", None, false, ts(0))
            .await
            .unwrap();
    }
    // Let the dropped store's writer thread close the file, then bump the version.
    for _ in 0..100 {
        if !dir.path().join("future.db-wal").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);

    let err = refused(&path, StorageErrorKind::Incompatible).await;
    assert!(matches!(err, OpenError::Incompatible { .. }), "{err:?}");
    assert!(err.to_string().contains("999"), "{err}");
}

/// Our application id with a negative schema version: no version of ours, and migrating
/// "from" it would skip every migration and stamp an empty file as current.
#[tokio::test]
async fn a_negative_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    // chat-store's application id ("chat"), as the store writes it.
    conn.pragma_update(None, "application_id", 0x6368_6174)
        .unwrap();
    conn.pragma_update(None, "user_version", -1).unwrap();
    drop(conn);
    let err = refused(&path, StorageErrorKind::Incompatible).await;
    assert!(matches!(err, OpenError::Incompatible { .. }), "{err:?}");
    assert!(err.to_string().contains("-1"), "{err}");
}

#[tokio::test]
async fn another_applications_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER)")
        .unwrap();
    drop(conn);
    let err = refused(&path, StorageErrorKind::Incompatible).await;
    assert!(matches!(err, OpenError::Incompatible { .. }), "{err:?}");
}

#[tokio::test]
async fn a_bad_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = SqliteConfig {
        readers: 0,
        ..SqliteConfig::default()
    };
    let err = SqliteStore::open(dir.path().join("x.db"), config)
        .await
        .unwrap_err();
    assert!(matches!(err, OpenError::Config(_)), "{err:?}");
}

/// The file is in WAL mode, at the current schema version, marked as ours, and consistent.
#[tokio::test]
async fn the_file_is_wal_versioned_and_consistent() {
    let t = support::TempStore::new().await;
    let alice = t
        .store
        .create_user("alice", None, false, ts(0))
        .await
        .unwrap();
    let g = t
        .store
        .create_room(NewRoom {
            kind: RoomKind::Group,
            name: "g".into(),
            created_by: Some(alice.id),
            at: ts(0),
        })
        .await
        .unwrap();
    t.store
        .append(message(g.id, &alice, "hi", Some("1")))
        .await
        .unwrap();

    let conn = rusqlite::Connection::open(t.store.path()).unwrap();
    let q = |sql: &str| -> String {
        conn.query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0))
            .map(|v| format!("{v:?}"))
            .unwrap()
    };
    assert_eq!(q("PRAGMA journal_mode"), "Text(\"wal\")");
    assert_eq!(
        q("PRAGMA user_version"),
        format!("Integer({})", SqliteStore::schema_version())
    );
    assert_eq!(q("PRAGMA integrity_check"), "Text(\"ok\")");
    let violations: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(violations, 0);
}

/// Everything written is there after closing and reopening, and ids keep counting up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.db");
    let config = SqliteConfig {
        synchronous: Synchronous::Full,
        ..SqliteConfig::default()
    };
    let (alice, bob, g, gone, dm, session) = {
        let s = SqliteStore::open(&path, config.clone()).await.unwrap();
        let alice = s
            .create_user("Alice", Some("$argon2id$x".into()), false, ts(0))
            .await
            .unwrap();
        let bob = s.create_user("bob", None, true, ts(1)).await.unwrap();
        let g = s
            .create_room(NewRoom {
                kind: RoomKind::Public,
                name: "Lobby".into(),
                created_by: Some(alice.id),
                at: ts(2),
            })
            .await
            .unwrap();
        let gone = s
            .create_room(NewRoom {
                kind: RoomKind::Group,
                name: "gone".into(),
                created_by: Some(alice.id),
                at: ts(3),
            })
            .await
            .unwrap();
        s.delete_room(gone.id).await.unwrap();
        let dm = s
            .direct_room(alice.id, bob.id, "a & b", ts(4))
            .await
            .unwrap();
        s.add_member(g.id, bob.id, Role::Admin, ts(5))
            .await
            .unwrap();
        for i in 0..5 {
            s.append(message(
                g.id,
                &alice,
                &format!("m{i}"),
                Some(&format!("c{i}")),
            ))
            .await
            .unwrap();
        }
        s.mark_read(g.id, bob.id, Seq(3)).await.unwrap();
        s.create_invite(Invite {
            code: "code".into(),
            room: g.id,
            created_by: alice.id,
            created_at: ts(6),
            expires_at: ts(10_000),
            max_uses: Some(3),
            uses: 1,
        })
        .await
        .unwrap();
        let session = chat_core::AuthSession {
            token_hash: [7; 32],
            user: alice.id,
            created_at: ts(0),
            expires_at: ts(10_000),
        };
        s.create_auth_session(session.clone()).await.unwrap();
        (alice, bob, g, gone, dm, session)
    };

    let s = SqliteStore::open(&path, config).await.unwrap();
    assert_eq!(s.user(alice.id).await.unwrap(), Some(alice.clone()));
    let c = s.credentials("ALICE").await.unwrap().unwrap();
    assert_eq!(c.password_hash.as_deref(), Some("$argon2id$x"));
    assert_eq!(s.credentials("bob").await.unwrap().unwrap().user, bob);
    assert_eq!(s.room(g.id).await.unwrap(), Some(g.clone()));
    assert_eq!(
        s.public_room_by_name("lobby").await.unwrap(),
        Some(g.clone())
    );
    assert_eq!(s.room(gone.id).await.unwrap(), None);
    assert_eq!(
        s.direct_room(bob.id, alice.id, "x", ts(9)).await.unwrap(),
        dm
    );
    assert_eq!(
        s.member(g.id, bob.id).await.unwrap().unwrap().role,
        Role::Admin
    );
    assert_eq!(s.latest_seq(g.id).await.unwrap(), Seq(5));
    let log = s
        .history(g.id, HistoryQuery::Before(Seq(u64::MAX)), 100)
        .await
        .unwrap();
    assert_eq!(log.len(), 5);
    let again = s
        .append(message(g.id, &alice, "retry", Some("c2")))
        .await
        .unwrap();
    assert!(again.duplicate, "idempotency keys survive a reopen");
    assert_eq!(again.entry, log[2]);
    let unread = s.unread(bob.id).await.unwrap();
    let lobby = unread.iter().find(|u| u.room == g.id).unwrap();
    assert_eq!(
        (lobby.read_seq, lobby.latest_seq, lobby.unread),
        (Seq(3), Seq(5), 2)
    );
    assert_eq!(s.invite("code").await.unwrap().unwrap().uses, 1);
    assert_eq!(
        s.auth_session(&[7; 32], ts(1)).await.unwrap(),
        Some(session)
    );

    // AUTOINCREMENT: the deleted room's id (the newest when deleted) is not handed out again.
    let next = s
        .create_room(NewRoom {
            kind: RoomKind::Group,
            name: "next".into(),
            created_by: None,
            at: ts(7),
        })
        .await
        .unwrap();
    assert!(next.id > dm.id && next.id != gone.id);
}

/// Another process holding the write lock past the busy timeout: the append fails with
/// `Busy` (never an ack), reads go on meanwhile, and the store recovers once the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_elsewhere_is_a_busy_error_and_passes() {
    let t = support::TempStore::with_config(SqliteConfig {
        busy_timeout: Duration::from_millis(100),
        ..SqliteConfig::default()
    })
    .await;
    let s = &t.store;
    let alice = s.create_user("alice", None, false, ts(0)).await.unwrap();
    let g = s
        .create_room(NewRoom {
            kind: RoomKind::Group,
            name: "g".into(),
            created_by: Some(alice.id),
            at: ts(0),
        })
        .await
        .unwrap();
    s.append(message(g.id, &alice, "before", None))
        .await
        .unwrap();

    let other = rusqlite::Connection::open(s.path()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let r = s.append(message(g.id, &alice, "blocked", Some("k"))).await;
    assert!(
        matches!(
            r,
            Err(Error::Storage {
                kind: StorageErrorKind::Busy,
                ..
            })
        ),
        "{r:?}"
    );
    // WAL: reads do not wait for the other process's write lock.
    assert_eq!(s.latest_seq(g.id).await.unwrap(), Seq(1));
    other.execute_batch("COMMIT").unwrap();

    let a = s
        .append(message(g.id, &alice, "after", Some("k")))
        .await
        .unwrap();
    assert!(!a.duplicate, "the refused append left no idempotency key");
    assert_eq!(a.entry.seq, Seq(2), "the refused append used no seq");
}
