//! The SQLite store: durable appends per second under 1, 16 and 256 concurrent publishers
//! (group commit at work), and a history page of 100 from a room of 1 000 000 entries.
//!
//! Appends go through the public `Store` API on a real file in a temporary directory: each
//! is acknowledged only after its transaction committed. Criterion's time per iteration is
//! the wall time for one append with `p` publishers appending concurrently (`iters` appends
//! split among them), so the reported throughput is appends per second overall.
//!
//! The load is shaped like a server's: publisher `p` is its own user, posting into one of
//! 16 rooms, with client message ids made as `chat-client` makes them: time-ordered (the
//! time in milliseconds first, like a UUIDv7 or a ULID), so that all new keys land at the
//! right edge of the idempotency index. Two variants of the 256-publisher case show what
//! other id shapes cost: `per_client_counter_ids` (a random prefix per client, then a
//! counter: ordered per client only, so every active client has its own insertion point in
//! the index) and `random_ids` (uniformly random, UUIDv4-like: every append lands on a
//! different index page). Ids are made at send time, as a client makes them; that costs
//! the publisher tasks well under a microsecond per append.
//!
//! The 1 000 000-entry room is built once, through the same public API (256 concurrent
//! publishers), not by writing rows behind the store's back, so the file has exactly the
//! layout the store produces. That takes several seconds of set-up.

use chat_core::store::NewRoom;
use chat_core::{
    EntryKind, HistoryQuery, Message, NewEntry, Role, RoomId, RoomKind, Seq, Store, Timestamp, User,
};
use chat_store::{SqliteConfig, SqliteStore, Synchronous};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A typical chat message.
const BODY: &str = "Sounds good, I'll push the fix after lunch and ping you when CI is green.";

/// Who posts, and how the client ids of a run look.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ids {
    /// `chat-client`'s shape: milliseconds since the epoch (12 hex digits), the client's
    /// random prefix, its counter.
    TimeOrdered,
    /// The client's random prefix, then its counter: ordered per client only.
    PerClientCounter,
    /// 128 well-mixed bits in hex, like a UUIDv4.
    Random,
}

struct Rig {
    store: Arc<SqliteStore>,
    users: Arc<[User]>,
    rooms: Arc<[RoomId]>,
    /// Makes every client message id unique across iterations.
    next_id: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

async fn rig(synchronous: Synchronous, users: usize, rooms: usize) -> Rig {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = SqliteConfig {
        synchronous,
        ..SqliteConfig::default()
    };
    let store = Arc::new(
        SqliteStore::open(dir.path().join("bench.db"), config)
            .await
            .expect("open"),
    );
    let mut all_users = Vec::new();
    for u in 0..users {
        let user = store
            .create_user(&format!("user{u}"), None, false, Timestamp::now())
            .await
            .expect("user");
        all_users.push(user);
    }
    let mut all_rooms = Vec::new();
    for r in 0..rooms {
        let room = store
            .create_room(NewRoom {
                kind: RoomKind::Group,
                name: format!("room {r}"),
                created_by: Some(all_users[0].id),
                at: Timestamp::now(),
            })
            .await
            .expect("room");
        all_rooms.push(room.id);
    }
    // Posts are accepted only from members (the store's authorship contract): every user
    // joins every room, so each append pays the membership check it pays in production.
    for &room in &all_rooms {
        for user in &all_users {
            store
                .add_member(room, user.id, Role::Member, Timestamp::now())
                .await
                .expect("member");
        }
    }
    Rig {
        store,
        users: all_users.into(),
        rooms: all_rooms.into(),
        next_id: Arc::new(AtomicU64::new(0)),
        _dir: dir,
    }
}

/// SplitMix64: a bijective mix, so distinct counters give distinct, random-looking ids.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1330_11eb);
    z ^ (z >> 31)
}

/// Publisher `publisher`'s append number `id` (unique across the run), made at send time.
fn entry(users: &[User], rooms: &[RoomId], publisher: u64, id: u64, ids: Ids) -> NewEntry {
    let user = &users[publisher as usize % users.len()];
    let prefix = mix(publisher);
    let client_msg_id = match ids {
        Ids::TimeOrdered => {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            format!("{ms:012x}-{prefix:016x}-{id}")
        }
        Ids::PerClientCounter => format!("cc-{prefix:016x}-{id}"),
        Ids::Random => format!("{:016x}{:016x}", mix(id), mix(!id)),
    };
    NewEntry {
        room: rooms[publisher as usize % rooms.len()],
        at: Timestamp::now(),
        kind: EntryKind::Message(Message {
            sender: Some(user.id),
            sender_name: user.username.clone(),
            body: BODY.into(),
            client_msg_id: Some(client_msg_id),
        }),
    }
}

/// CPU seconds used so far by each of this process's threads, by thread id, with the
/// thread's name (Linux only; empty elsewhere). The wall-clock figures of a shared 2-core
/// machine move with whatever else runs on it; the store threads' CPU time per append
/// moves much less, so the benchmark prints it too.
fn thread_cpu() -> HashMap<String, (String, f64)> {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue;
        };
        // Fields after the parenthesised name; utime and stime are the 12th and 13th.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
            // USER_HZ is 100 on Linux.
            let tid = task.file_name().to_string_lossy().into_owned();
            out.insert(tid, (comm.trim().to_string(), (user + system) / 100.0));
        }
    }
    out
}

/// CPU seconds the threads named `prefix…` used between two [`thread_cpu`] snapshots.
fn cpu_between(
    before: &HashMap<String, (String, f64)>,
    after: &HashMap<String, (String, f64)>,
    prefix: &str,
) -> f64 {
    after
        .iter()
        .filter(|(_, (name, _))| name.starts_with(prefix))
        .map(|(tid, (_, t))| t - before.get(tid).map_or(0.0, |(_, b)| *b))
        .sum()
}

/// `total` appends from `publishers` concurrent tasks; returns the wall time.
async fn append_concurrently(rig: &Rig, publishers: u64, total: u64, ids: Ids) -> Duration {
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for p in 0..publishers {
        let share = total / publishers + u64::from(p < total % publishers);
        if share == 0 {
            continue;
        }
        let first = rig.next_id.fetch_add(share, Ordering::Relaxed);
        let (store, users, rooms) = (rig.store.clone(), rig.users.clone(), rig.rooms.clone());
        tasks.spawn(async move {
            for id in first..first + share {
                let a = store
                    .append(entry(&users, &rooms, p, id, ids))
                    .await
                    .expect("append");
                assert!(!a.duplicate);
            }
        });
    }
    tasks.join_all().await;
    start.elapsed()
}

fn appends(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("store_append");
    group.throughput(Throughput::Elements(1));
    let all = &[1u64, 16, 256][..];
    let cases = [
        ("sync_normal", Synchronous::Normal, Ids::TimeOrdered, all),
        ("sync_full", Synchronous::Full, Ids::TimeOrdered, all),
        (
            "sync_normal_per_client_counter_ids",
            Synchronous::Normal,
            Ids::PerClientCounter,
            &[256][..],
        ),
        (
            "sync_normal_random_ids",
            Synchronous::Normal,
            Ids::Random,
            &[256][..],
        ),
    ];
    for (label, sync, ids, publisher_counts) in cases {
        let rig = rt.block_on(rig(sync, 256, 16));
        for &publishers in publisher_counts {
            let before = rig.store.write_stats();
            let cpu_before = thread_cpu();
            group.bench_with_input(BenchmarkId::new(label, publishers), &publishers, |b, &p| {
                b.iter_custom(|iters| rt.block_on(append_concurrently(&rig, p, iters, ids)))
            });
            let after = rig.store.write_stats();
            let commands = after.commands - before.commands;
            let transactions = (after.transactions - before.transactions).max(1);
            let cpu_after = thread_cpu();
            let per_append =
                |name| cpu_between(&cpu_before, &cpu_after, name) * 1e6 / commands.max(1) as f64;
            eprintln!(
                "  {label}/{publishers}: {commands} appends in {transactions} transactions, \
                 {:.1} per commit; CPU per append: writer {:.1} µs, checkpointer {:.1} µs",
                commands as f64 / transactions as f64,
                per_append("chat-store-writ"),
                per_append("chat-store-chec"),
            );
        }
    }
    group.finish();
}

fn history(c: &mut Criterion) {
    const ROOM_SIZE: u64 = 1_000_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // One room, 256 users posting into it.
    let rig = rt.block_on(rig(Synchronous::Normal, 256, 1));
    let room = rig.rooms[0];
    let started = Instant::now();
    let mut built = 0;
    while built < ROOM_SIZE {
        let chunk = 100_000.min(ROOM_SIZE - built);
        rt.block_on(append_concurrently(&rig, 256, chunk, Ids::TimeOrdered));
        built += chunk;
    }
    let latest = rt.block_on(rig.store.latest_seq(room)).expect("latest");
    assert_eq!(latest, Seq(ROOM_SIZE));
    eprintln!(
        "  built a room of {ROOM_SIZE} entries in {:.1?}",
        started.elapsed()
    );

    let mut group = c.benchmark_group("store_history_1m");
    group.throughput(Throughput::Elements(100));
    let pages = [
        ("latest_100", HistoryQuery::Before(Seq(u64::MAX))),
        ("middle_100", HistoryQuery::Before(Seq(ROOM_SIZE / 2))),
        ("oldest_100", HistoryQuery::After(Seq::ZERO)),
    ];
    for (name, query) in pages {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let page = rig.store.history(room, query, 100).await.expect("history");
                assert_eq!(page.len(), 100);
                page
            })
        });
    }
    group.finish();

    // Not a criterion benchmark (it can run once): how long deleting the room holds the
    // writer, which is how long other writes wait meanwhile.
    let started = Instant::now();
    assert!(rt.block_on(rig.store.delete_room(room)).expect("delete"));
    eprintln!(
        "  deleted the room of {ROOM_SIZE} entries in {:.1?}",
        started.elapsed()
    );
}

// criterion_group! generates an undocumented public fn.
#[allow(missing_docs)]
mod harness {
    criterion::criterion_group!(benches, super::appends, super::history);
}
use harness::benches;
criterion_main!(benches);
