//! The store conformance suite: the contracts of [`Store`] as executable checks.
//!
//! Each `pub async fn` here takes a fresh, empty store and panics if the store breaks one
//! behaviour. [`store_conformance_tests!`](crate::store_conformance_tests) turns all of them
//! into `#[tokio::test]`s for one store implementation:
//!
//! ```
//! // tests/conformance_memory.rs
//! chat_store::store_conformance_tests!(|| async { std::sync::Arc::new(chat_store::MemoryStore::new()) });
//! # fn main() {}
//! ```
//!
//! The behaviours assume nothing about ids except that they are assigned by the store, are
//! greater than zero, and are never reused; they assume nothing about timestamps except that
//! the store keeps the ones it is given.

use chat_core::store::{MAX_HISTORY_PAGE, NewRoom};
use chat_core::{
    AuthSession, EntryKind, Error, ErrorCode, HistoryQuery, Invite, LogEntry, Message, NewEntry,
    Role, Room, RoomId, RoomKind, Seq, Timestamp, User, UserId,
};
use std::collections::BTreeSet;
use std::sync::Arc;

pub use chat_core::Store;

/// Expands to one `#[tokio::test]` per behaviour of [`conformance`](crate::conformance), each
/// run on a fresh store from `$make`.
///
/// `$make` is an **async factory**: an expression that can be called with no arguments and
/// returns a future whose output is an `Arc` of the store (`Arc<MyStore>` or
/// `Arc<dyn Store>`). It is called once per test, so every test gets its own empty store; a
/// store that needs a temporary directory should own it. The tests use the multi-threaded
/// runtime with four workers, so the crate invoking the macro needs `tokio` with the
/// `rt-multi-thread` and `macros` features among its (dev-)dependencies.
///
/// ```
/// use chat_store::MemoryStore;
/// use std::sync::Arc;
///
/// chat_store::store_conformance_tests!(|| async { Arc::new(MemoryStore::new()) });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::__store_conformance_tests!(
            $make;
            users_create_and_lookup,
            users_names_unique_case_insensitively,
            users_guests_have_no_password,
            auth_sessions_create_and_lookup,
            auth_sessions_expire,
            auth_sessions_revoke_one,
            auth_sessions_revoke_all_of_a_user,
            rooms_create_group_and_public,
            rooms_created_by_the_system_have_no_owner,
            rooms_public_names_unique_case_insensitively,
            rooms_group_names_not_unique,
            rooms_direct_kind_refused,
            rooms_lookup_unknown,
            rooms_public_rooms_paginate,
            direct_room_same_for_both_orders,
            direct_room_created_once_under_concurrency,
            direct_room_with_self_refused,
            direct_room_with_unknown_user_refused,
            delete_room_cascades,
            delete_direct_room_allows_a_new_one,
            ids_never_reused,
            members_add_and_remove,
            members_remove_below_spares_equal_and_higher_roles,
            members_add_existing_changes_nothing,
            members_set_role,
            members_ordered_and_rooms_of_ordered,
            members_unknown_room_or_user,
            append_assigns_seqs_from_one,
            append_seqs_independent_per_room,
            append_idempotent_for_same_sender,
            append_same_client_id_other_sender_not_duplicate,
            append_without_key_never_deduplicated,
            append_idempotent_under_concurrency,
            append_unknown_room_refused,
            append_requires_the_author_to_be_a_member,
            history_empty_and_unknown_room,
            history_pagination_boundaries,
            history_limit_clamped,
            concurrent_appends_one_room,
            concurrent_appends_many_rooms,
            read_markers_move_forward_only,
            read_markers_need_membership,
            read_markers_reset_on_rejoin,
            unread_counts_others_messages_after_marker,
            unread_lists_rooms_in_id_order,
            invites_create_and_get,
            invites_redeem_adds_member_and_counts_use,
            invites_redeem_idempotent_for_members,
            invites_errors_are_distinct,
            invites_unlimited_uses,
            invites_redeem_atomic_under_concurrency,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_tests {
    ($make:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let store: ::std::sync::Arc<dyn $crate::conformance::Store> = ($make)().await;
                $crate::conformance::$name(store).await;
            }
        )*
    };
}

// ----- helpers -----

fn ts(ms: i64) -> Timestamp {
    Timestamp(1_700_000_000_000 + ms)
}

async fn user(store: &Arc<dyn Store>, name: &str) -> User {
    store
        .create_user(
            name,
            Some(format!("$argon2id$hash-of-{name}")),
            false,
            ts(0),
        )
        .await
        .expect("create_user")
}

async fn room(store: &Arc<dyn Store>, kind: RoomKind, name: &str, owner: Option<&User>) -> Room {
    store
        .create_room(NewRoom {
            kind,
            name: name.to_string(),
            created_by: owner.map(|u| u.id),
            at: ts(1),
        })
        .await
        .expect("create_room")
}

async fn group(store: &Arc<dyn Store>, name: &str, owner: &User) -> Room {
    room(store, RoomKind::Group, name, Some(owner)).await
}

fn entry(room: RoomId, sender: Option<&User>, body: &str, client_msg_id: Option<&str>) -> NewEntry {
    NewEntry {
        room,
        at: ts(10),
        kind: EntryKind::Message(Message {
            sender: sender.map(|u| u.id),
            sender_name: sender.map_or("system".to_string(), |u| u.username.clone()),
            body: body.to_string(),
            client_msg_id: client_msg_id.map(str::to_string),
        }),
    }
}

fn body(e: &LogEntry) -> &str {
    match &e.kind {
        EntryKind::Message(m) => &m.body,
    }
}

fn seqs(entries: &[LogEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq.0).collect()
}

async fn post(store: &Arc<dyn Store>, room: RoomId, sender: Option<&User>, body: &str) -> Seq {
    let a = store
        .append(entry(room, sender, body, None))
        .await
        .expect("append");
    assert!(!a.duplicate);
    a.entry.seq
}

/// The whole log of a room, read forwards page by page.
async fn whole_log(store: &Arc<dyn Store>, room: RoomId) -> Vec<LogEntry> {
    let mut all: Vec<LogEntry> = Vec::new();
    loop {
        let after = all.last().map_or(Seq::ZERO, |e| e.seq);
        let page = store
            .history(room, HistoryQuery::After(after), MAX_HISTORY_PAGE)
            .await
            .expect("history");
        if page.is_empty() {
            return all;
        }
        // Checked here so that a store that ignores `after` fails instead of looping forever.
        assert!(
            page.windows(2).all(|w| w[0].seq < w[1].seq) && page[0].seq > after,
            "After({after}) returned seqs {:?}",
            seqs(&page)
        );
        all.extend(page);
    }
}

fn invite(
    code: &str,
    room: RoomId,
    by: &User,
    expires_at: Timestamp,
    max_uses: Option<u32>,
) -> Invite {
    Invite {
        code: code.to_string(),
        room,
        created_by: by.id,
        created_at: ts(0),
        expires_at,
        max_uses,
        uses: 0,
    }
}

fn session(byte: u8, user: &User, expires_at: Timestamp) -> AuthSession {
    AuthSession {
        token_hash: [byte; 32],
        user: user.id,
        created_at: ts(0),
        expires_at,
    }
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(r: chat_core::Result<T>, code: ErrorCode) {
    match r {
        Err(e) => assert_eq!(e.code(), code, "wrong error: {e:?}"),
        Ok(v) => panic!("expected {code}, got Ok({v:?})"),
    }
}

// ----- users -----

/// Users get distinct non-zero ids and are found by id and by name in any case.
pub async fn users_create_and_lookup(store: Arc<dyn Store>) {
    let alice = store
        .create_user("Alice", Some("$argon2id$a".into()), false, ts(5))
        .await
        .unwrap();
    let bob = user(&store, "bob").await;
    assert_ne!(alice.id, bob.id);
    assert!(alice.id.0 > 0 && bob.id.0 > 0);
    assert_eq!(alice.username, "Alice", "stored as given");
    assert!(!alice.guest);
    assert_eq!(alice.created_at, ts(5));

    assert_eq!(store.user(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(store.user(bob.id).await.unwrap(), Some(bob.clone()));
    assert_eq!(store.user(UserId(u64::MAX)).await.unwrap(), None);

    for name in ["Alice", "alice", "ALICE", "aLiCe"] {
        let c = store.credentials(name).await.unwrap().expect(name);
        assert_eq!(c.user, alice);
        assert_eq!(c.password_hash.as_deref(), Some("$argon2id$a"));
    }
    assert_eq!(store.credentials("carol").await.unwrap(), None);
    assert_eq!(store.credentials("alic").await.unwrap(), None);
}

/// A username taken in any case is refused with `AlreadyExists`.
pub async fn users_names_unique_case_insensitively(store: Arc<dyn Store>) {
    let alice = user(&store, "Alice").await;
    for name in ["Alice", "alice", "ALICE"] {
        let r = store.create_user(name, None, false, ts(1)).await;
        assert!(matches!(r, Err(Error::AlreadyExists(_))), "{name}: {r:?}");
        let r = store.create_user(name, None, true, ts(1)).await;
        assert!(
            matches!(r, Err(Error::AlreadyExists(_))),
            "guest {name}: {r:?}"
        );
    }
    // The failed attempts changed nothing.
    let c = store.credentials("alice").await.unwrap().unwrap();
    assert_eq!(c.user, alice);
    assert!(c.password_hash.is_some());
    // Other names are still free.
    user(&store, "alice2").await;
}

/// Guests are stored with `guest: true` and no password hash.
pub async fn users_guests_have_no_password(store: Arc<dyn Store>) {
    let g = store
        .create_user("visitor", None, true, ts(3))
        .await
        .unwrap();
    assert!(g.guest);
    assert_eq!(store.user(g.id).await.unwrap(), Some(g.clone()));
    let c = store.credentials("Visitor").await.unwrap().unwrap();
    assert_eq!(c.user, g);
    assert_eq!(c.password_hash, None);
}

// ----- auth sessions -----

/// A stored login session is found by its token hash before it expires.
pub async fn auth_sessions_create_and_lookup(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let s = session(1, &alice, ts(1000));
    store.create_auth_session(s.clone()).await.unwrap();
    assert_eq!(store.auth_session(&[1; 32], ts(0)).await.unwrap(), Some(s));
    assert_eq!(store.auth_session(&[2; 32], ts(0)).await.unwrap(), None);
}

/// A login session is returned only while `expires_at > now`.
pub async fn auth_sessions_expire(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let s = session(7, &alice, ts(1000));
    store.create_auth_session(s.clone()).await.unwrap();
    assert_eq!(
        store.auth_session(&[7; 32], ts(999)).await.unwrap(),
        Some(s)
    );
    assert_eq!(store.auth_session(&[7; 32], ts(1000)).await.unwrap(), None);
    assert_eq!(store.auth_session(&[7; 32], ts(5000)).await.unwrap(), None);
}

/// Revoking one session removes it only; revoking it again returns `false`.
pub async fn auth_sessions_revoke_one(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    store
        .create_auth_session(session(1, &alice, ts(1000)))
        .await
        .unwrap();
    store
        .create_auth_session(session(2, &alice, ts(1000)))
        .await
        .unwrap();
    assert!(store.revoke_auth_session(&[1; 32]).await.unwrap());
    assert_eq!(store.auth_session(&[1; 32], ts(0)).await.unwrap(), None);
    assert!(store.auth_session(&[2; 32], ts(0)).await.unwrap().is_some());
    assert!(!store.revoke_auth_session(&[1; 32]).await.unwrap());
    assert!(!store.revoke_auth_session(&[9; 32]).await.unwrap());
}

/// Revoking all of a user's sessions returns how many there were and spares other users'.
pub async fn auth_sessions_revoke_all_of_a_user(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    for b in 1..=3 {
        store
            .create_auth_session(session(b, &alice, ts(1000)))
            .await
            .unwrap();
    }
    store
        .create_auth_session(session(10, &bob, ts(1000)))
        .await
        .unwrap();
    assert_eq!(store.revoke_user_auth_sessions(alice.id).await.unwrap(), 3);
    for b in 1..=3 {
        assert_eq!(store.auth_session(&[b; 32], ts(0)).await.unwrap(), None);
    }
    assert!(
        store
            .auth_session(&[10; 32], ts(0))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.revoke_user_auth_sessions(alice.id).await.unwrap(), 0);
    assert_eq!(store.revoke_user_auth_sessions(bob.id).await.unwrap(), 1);
}

// ----- rooms -----

/// Group and public rooms are stored as given and their creator becomes their owner.
pub async fn rooms_create_group_and_public(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    for kind in [RoomKind::Group, RoomKind::Public] {
        let r = store
            .create_room(NewRoom {
                kind,
                name: format!("{kind:?} room"),
                created_by: Some(alice.id),
                at: ts(42),
            })
            .await
            .unwrap();
        assert!(r.id.0 > 0);
        assert_eq!(r.kind, kind);
        assert_eq!(r.name, format!("{kind:?} room"));
        assert_eq!(r.created_by, Some(alice.id));
        assert_eq!(r.created_at, ts(42));
        assert_eq!(store.room(r.id).await.unwrap(), Some(r.clone()));

        let m = store
            .member(r.id, alice.id)
            .await
            .unwrap()
            .expect("owner is a member");
        assert_eq!(m.role, Role::Owner);
        assert_eq!(m.room, r.id);
        assert_eq!(m.user, alice.id);
        assert_eq!(m.username, "alice");
        assert_eq!(store.members(r.id).await.unwrap(), vec![m]);
    }
    let mine = store.rooms_of(alice.id).await.unwrap();
    assert_eq!(mine.len(), 2);
    assert!(mine.iter().all(|m| m.role == Role::Owner));
}

/// A room created by the system (`created_by: None`) starts with no members.
pub async fn rooms_created_by_the_system_have_no_owner(store: Arc<dyn Store>) {
    let r = room(&store, RoomKind::Public, "lobby", None).await;
    assert_eq!(r.created_by, None);
    assert_eq!(store.members(r.id).await.unwrap(), vec![]);
    assert_eq!(store.room(r.id).await.unwrap(), Some(r));
}

/// Public room names are unique case-insensitively; group names do not collide with them.
pub async fn rooms_public_names_unique_case_insensitively(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let lobby = room(&store, RoomKind::Public, "Lobby", Some(&alice)).await;
    for name in ["Lobby", "lobby", "LOBBY"] {
        let r = store
            .create_room(NewRoom {
                kind: RoomKind::Public,
                name: name.into(),
                created_by: Some(alice.id),
                at: ts(2),
            })
            .await;
        assert!(matches!(r, Err(Error::AlreadyExists(_))), "{name}: {r:?}");
    }
    // A group may share a public room's name, and is not found as a public room.
    let g = group(&store, "LOBBY", &alice).await;
    assert_ne!(g.id, lobby.id);
    for name in ["lobby", "LoBbY", "Lobby"] {
        assert_eq!(
            store.public_room_by_name(name).await.unwrap(),
            Some(lobby.clone())
        );
    }
    let _only_group = group(&store, "backroom", &alice).await;
    assert_eq!(store.public_room_by_name("backroom").await.unwrap(), None);
    // The refused attempts created nothing.
    assert_eq!(store.rooms_of(alice.id).await.unwrap().len(), 3);
}

/// Two group rooms may have the same name.
pub async fn rooms_group_names_not_unique(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let a = group(&store, "team", &alice).await;
    let b = group(&store, "team", &alice).await;
    let c = group(&store, "TEAM", &alice).await;
    let ids: BTreeSet<RoomId> = [a.id, b.id, c.id].into();
    assert_eq!(ids.len(), 3);
}

/// `create_room` refuses `RoomKind::Direct` with `Error::Invalid` and creates nothing.
pub async fn rooms_direct_kind_refused(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let r = store
        .create_room(NewRoom {
            kind: RoomKind::Direct,
            name: "dm".into(),
            created_by: Some(alice.id),
            at: ts(0),
        })
        .await;
    assert!(matches!(r, Err(Error::Invalid { .. })), "{r:?}");
    assert_eq!(store.rooms_of(alice.id).await.unwrap(), vec![]);
}

/// Unknown rooms are `None`, not errors.
pub async fn rooms_lookup_unknown(store: Arc<dyn Store>) {
    assert_eq!(store.room(RoomId(1)).await.unwrap(), None);
    assert_eq!(store.room(RoomId(u64::MAX)).await.unwrap(), None);
    assert_eq!(store.public_room_by_name("nowhere").await.unwrap(), None);
    assert_eq!(store.public_rooms(RoomId(0), 10).await.unwrap(), vec![]);
}

/// `public_rooms` lists only public rooms, by id, after `after`, at most `limit`.
pub async fn rooms_public_rooms_paginate(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let mut public = Vec::new();
    for i in 0..7 {
        public.push(room(&store, RoomKind::Public, &format!("pub{i}"), Some(&alice)).await);
        group(&store, &format!("grp{i}"), &alice).await;
        if i == 3 {
            store
                .direct_room(alice.id, bob.id, "alice & bob", ts(0))
                .await
                .unwrap();
            room(&store, RoomKind::Public, "system", None).await;
        }
    }
    let system = store.public_room_by_name("system").await.unwrap().unwrap();
    public.push(system);
    public.sort_by_key(|r| r.id);

    assert_eq!(
        store.public_rooms(RoomId(0), usize::MAX).await.unwrap(),
        public
    );
    assert_eq!(store.public_rooms(RoomId(0), 0).await.unwrap(), vec![]);

    let mut seen = Vec::new();
    let mut after = RoomId(0);
    loop {
        let page = store.public_rooms(after, 3).await.unwrap();
        assert!(page.len() <= 3);
        assert!(
            page.iter().all(|r| r.id > after),
            "public_rooms ignored `after`"
        );
        let Some(last) = page.last() else { break };
        after = last.id;
        seen.extend(page);
    }
    assert_eq!(seen, public);

    let after_third = store.public_rooms(public[2].id, 2).await.unwrap();
    assert_eq!(after_third, public[3..5].to_vec());
    let last = public.last().unwrap().id;
    assert_eq!(store.public_rooms(last, 10).await.unwrap(), vec![]);
}

/// `direct_room` returns the same room for `(a, b)` and `(b, a)`, with both as plain members.
pub async fn direct_room_same_for_both_orders(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    let ab = store
        .direct_room(alice.id, bob.id, "alice & bob", ts(7))
        .await
        .unwrap();
    assert_eq!(ab.kind, RoomKind::Direct);
    assert_eq!(ab.name, "alice & bob");
    assert_eq!(ab.created_by, Some(alice.id));
    assert_eq!(ab.created_at, ts(7));
    assert_eq!(store.room(ab.id).await.unwrap(), Some(ab.clone()));

    let ba = store
        .direct_room(bob.id, alice.id, "ignored", ts(8))
        .await
        .unwrap();
    assert_eq!(
        ba, ab,
        "same room; the name and time are used only when creating"
    );
    let again = store
        .direct_room(alice.id, bob.id, "other", ts(9))
        .await
        .unwrap();
    assert_eq!(again, ab);

    let members = store.members(ab.id).await.unwrap();
    let mut expected: Vec<(UserId, Role)> = vec![(alice.id, Role::Member), (bob.id, Role::Member)];
    expected.sort();
    assert_eq!(
        members.iter().map(|m| (m.user, m.role)).collect::<Vec<_>>(),
        expected,
        "both are members, neither is the owner"
    );
    // A direct room is not public and does not take a public name.
    assert_eq!(
        store.public_room_by_name("alice & bob").await.unwrap(),
        None
    );

    let ac = store
        .direct_room(alice.id, carol.id, "alice & carol", ts(0))
        .await
        .unwrap();
    assert_ne!(ac.id, ab.id);
    assert_eq!(store.rooms_of(alice.id).await.unwrap().len(), 2);
    assert_eq!(store.rooms_of(bob.id).await.unwrap().len(), 1);
}

/// Eight concurrent `direct_room` calls for one pair, in both orders, create one room.
pub async fn direct_room_created_once_under_concurrency(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = store.clone();
        let barrier = barrier.clone();
        let (a, b) = if i % 2 == 0 {
            (alice.id, bob.id)
        } else {
            (bob.id, alice.id)
        };
        tasks.spawn(async move {
            barrier.wait().await;
            store.direct_room(a, b, "alice & bob", ts(i)).await.unwrap()
        });
    }
    let rooms: Vec<Room> = tasks.join_all().await;
    let ids: BTreeSet<RoomId> = rooms.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 1, "{rooms:?}");
    let id = rooms[0].id;
    assert_eq!(store.members(id).await.unwrap().len(), 2);
    let of_alice = store.rooms_of(alice.id).await.unwrap();
    assert_eq!(of_alice.len(), 1);
    assert_eq!(of_alice[0].room.id, id);
    assert_eq!(store.rooms_of(bob.id).await.unwrap().len(), 1);
}

/// `direct_room(a, a, ..)` is `Error::Invalid` and creates nothing.
pub async fn direct_room_with_self_refused(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let r = store
        .direct_room(alice.id, alice.id, "alice & alice", ts(0))
        .await;
    assert!(matches!(r, Err(Error::Invalid { .. })), "{r:?}");
    assert_eq!(store.rooms_of(alice.id).await.unwrap(), vec![]);
}

/// `direct_room` with a user that does not exist fails with `UserNotFound`.
pub async fn direct_room_with_unknown_user_refused(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let ghost = UserId(u64::MAX);
    assert_code(
        store.direct_room(alice.id, ghost, "x", ts(0)).await,
        ErrorCode::UserNotFound,
    );
    assert_code(
        store.direct_room(ghost, alice.id, "x", ts(0)).await,
        ErrorCode::UserNotFound,
    );
    assert_eq!(store.rooms_of(alice.id).await.unwrap(), vec![]);
}

/// Deleting a room removes its members, log, read markers, invites, public name and
/// idempotency keys, and leaves other rooms alone.
pub async fn delete_room_cascades(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let doomed = room(&store, RoomKind::Public, "Doomed", Some(&alice)).await;
    let kept = group(&store, "kept", &alice).await;
    store
        .add_member(doomed.id, bob.id, Role::Member, ts(0))
        .await
        .unwrap();
    store
        .add_member(kept.id, bob.id, Role::Member, ts(0))
        .await
        .unwrap();
    let first = store
        .append(entry(doomed.id, Some(&alice), "hi", Some("m1")))
        .await
        .unwrap();
    assert!(!first.duplicate);
    post(&store, doomed.id, Some(&bob), "hello").await;
    post(&store, kept.id, Some(&bob), "still here").await;
    store.mark_read(doomed.id, bob.id, Seq(1)).await.unwrap();
    store
        .create_invite(invite("doomed-code", doomed.id, &alice, ts(10_000), None))
        .await
        .unwrap();
    store
        .create_invite(invite("kept-code", kept.id, &alice, ts(10_000), None))
        .await
        .unwrap();

    assert!(store.delete_room(doomed.id).await.unwrap());

    assert_eq!(store.room(doomed.id).await.unwrap(), None);
    assert_eq!(store.members(doomed.id).await.unwrap(), vec![]);
    assert_eq!(store.member(doomed.id, alice.id).await.unwrap(), None);
    for u in [&alice, &bob] {
        let rooms: Vec<RoomId> = store
            .rooms_of(u.id)
            .await
            .unwrap()
            .iter()
            .map(|m| m.room.id)
            .collect();
        assert_eq!(rooms, vec![kept.id]);
        let unread: Vec<RoomId> = store
            .unread(u.id)
            .await
            .unwrap()
            .iter()
            .map(|u| u.room)
            .collect();
        assert_eq!(unread, vec![kept.id]);
    }
    assert_eq!(store.latest_seq(doomed.id).await.unwrap(), Seq::ZERO);
    assert_eq!(
        store
            .history(doomed.id, HistoryQuery::Before(Seq(u64::MAX)), 100)
            .await
            .unwrap(),
        vec![]
    );
    assert_code(
        store
            .append(entry(doomed.id, Some(&alice), "late", None))
            .await,
        ErrorCode::RoomNotFound,
    );
    assert_code(
        store.mark_read(doomed.id, bob.id, Seq(2)).await,
        ErrorCode::NotMember,
    );
    assert_eq!(store.invite("doomed-code").await.unwrap(), None);
    assert_code(
        store.redeem_invite("doomed-code", bob.id, ts(0)).await,
        ErrorCode::InviteUnknown,
    );
    assert_eq!(store.public_room_by_name("doomed").await.unwrap(), None);
    assert_eq!(store.public_rooms(RoomId(0), 10).await.unwrap(), vec![]);

    // Its public name and idempotency keys are free again.
    let reborn = room(&store, RoomKind::Public, "doomed", Some(&alice)).await;
    assert_ne!(reborn.id, doomed.id);
    let again = store
        .append(entry(kept.id, Some(&alice), "hi again", Some("m1")))
        .await
        .unwrap();
    assert!(
        !again.duplicate,
        "the deleted room's idempotency key is gone"
    );
    assert_eq!(again.entry.room, kept.id);

    // Other rooms are untouched.
    assert!(store.invite("kept-code").await.unwrap().is_some());
    assert_eq!(store.latest_seq(kept.id).await.unwrap(), Seq(2));
    assert_eq!(store.members(kept.id).await.unwrap().len(), 2);

    assert!(!store.delete_room(doomed.id).await.unwrap());
    assert!(!store.delete_room(RoomId(u64::MAX)).await.unwrap());
}

/// After a direct room is deleted, `direct_room` creates a new one for the pair.
pub async fn delete_direct_room_allows_a_new_one(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let old = store
        .direct_room(alice.id, bob.id, "alice & bob", ts(0))
        .await
        .unwrap();
    post(&store, old.id, Some(&alice), "hi").await;
    assert!(store.delete_room(old.id).await.unwrap());
    let new = store
        .direct_room(bob.id, alice.id, "alice & bob", ts(1))
        .await
        .unwrap();
    assert_ne!(new.id, old.id);
    assert_eq!(new.created_by, Some(bob.id));
    assert_eq!(store.members(new.id).await.unwrap().len(), 2);
    assert_eq!(store.latest_seq(new.id).await.unwrap(), Seq::ZERO);
    assert_eq!(
        store
            .direct_room(alice.id, bob.id, "x", ts(2))
            .await
            .unwrap(),
        new
    );
}

/// Room ids are never reused, not even after the newest room is deleted.
pub async fn ids_never_reused(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let mut seen = BTreeSet::new();
    for i in 0..5 {
        let r = group(&store, &format!("g{i}"), &alice).await;
        assert!(seen.insert(r.id), "room id {} reused", r.id);
        assert!(store.delete_room(r.id).await.unwrap());
    }
    let users: BTreeSet<UserId> = [alice.id, user(&store, "bob").await.id].into();
    assert_eq!(users.len(), 2);
}

// ----- memberships -----

/// `remove_member_below` removes only a member whose role is below the given one, and says
/// whether it did.
pub async fn members_remove_below_spares_equal_and_higher_roles(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    let g = group(&store, "g", &alice).await;
    for (who, role) in [(&bob, Role::Admin), (&carol, Role::Member)] {
        assert!(store.add_member(g.id, who.id, role, ts(1)).await.unwrap());
    }
    // An admin is not below an admin; the owner is below nobody.
    assert!(
        !store
            .remove_member_below(g.id, bob.id, Role::Admin)
            .await
            .unwrap()
    );
    assert!(
        !store
            .remove_member_below(g.id, alice.id, Role::Owner)
            .await
            .unwrap()
    );
    assert_eq!(store.members(g.id).await.unwrap().len(), 3);
    assert!(
        store
            .remove_member_below(g.id, carol.id, Role::Admin)
            .await
            .unwrap()
    );
    assert!(
        store
            .remove_member_below(g.id, bob.id, Role::Owner)
            .await
            .unwrap()
    );
    assert_eq!(store.member(g.id, bob.id).await.unwrap(), None);
    assert_eq!(store.rooms_of(carol.id).await.unwrap(), vec![]);
    // Not a member (any more), or no such room: nothing removed.
    assert!(
        !store
            .remove_member_below(g.id, carol.id, Role::Owner)
            .await
            .unwrap()
    );
    assert!(
        !store
            .remove_member_below(RoomId(u64::MAX), alice.id, Role::Owner)
            .await
            .unwrap()
    );
}

/// `add_member` adds with the given role and time; `remove_member` removes; both report
/// whether anything changed.
pub async fn members_add_and_remove(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "Bob").await;
    let g = group(&store, "g", &alice).await;
    assert_eq!(store.member(g.id, bob.id).await.unwrap(), None);
    assert!(
        store
            .add_member(g.id, bob.id, Role::Admin, ts(77))
            .await
            .unwrap()
    );
    let m = store.member(g.id, bob.id).await.unwrap().unwrap();
    assert_eq!(m.room, g.id);
    assert_eq!(m.user, bob.id);
    assert_eq!(m.username, "Bob");
    assert_eq!(m.role, Role::Admin);
    assert_eq!(m.joined_at, ts(77));
    assert_eq!(store.rooms_of(bob.id).await.unwrap()[0].role, Role::Admin);

    assert!(store.remove_member(g.id, bob.id).await.unwrap());
    assert_eq!(store.member(g.id, bob.id).await.unwrap(), None);
    assert_eq!(store.rooms_of(bob.id).await.unwrap(), vec![]);
    assert_eq!(store.members(g.id).await.unwrap().len(), 1);
    assert!(!store.remove_member(g.id, bob.id).await.unwrap());

    assert!(
        store
            .add_member(g.id, bob.id, Role::Member, ts(78))
            .await
            .unwrap()
    );
    let m = store.member(g.id, bob.id).await.unwrap().unwrap();
    assert_eq!((m.role, m.joined_at), (Role::Member, ts(78)));
}

/// Adding an existing member returns `false` and changes nothing, not even the role.
pub async fn members_add_existing_changes_nothing(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let g = group(&store, "g", &alice).await;
    let owner = store.member(g.id, alice.id).await.unwrap().unwrap();
    assert!(
        !store
            .add_member(g.id, alice.id, Role::Member, ts(99))
            .await
            .unwrap()
    );
    assert_eq!(store.member(g.id, alice.id).await.unwrap(), Some(owner));

    assert!(
        store
            .add_member(g.id, bob.id, Role::Admin, ts(5))
            .await
            .unwrap()
    );
    let admin = store.member(g.id, bob.id).await.unwrap().unwrap();
    assert!(
        !store
            .add_member(g.id, bob.id, Role::Owner, ts(6))
            .await
            .unwrap()
    );
    assert!(
        !store
            .add_member(g.id, bob.id, Role::Member, ts(6))
            .await
            .unwrap()
    );
    assert_eq!(store.member(g.id, bob.id).await.unwrap(), Some(admin));
    assert_eq!(store.members(g.id).await.unwrap().len(), 2);
}

/// `set_role` changes a member's role; for a non-member it is `NotMember`.
pub async fn members_set_role(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    let g = group(&store, "g", &alice).await;
    store
        .add_member(g.id, bob.id, Role::Member, ts(0))
        .await
        .unwrap();
    store.set_role(g.id, bob.id, Role::Admin).await.unwrap();
    assert_eq!(
        store.member(g.id, bob.id).await.unwrap().unwrap().role,
        Role::Admin
    );
    store.set_role(g.id, bob.id, Role::Member).await.unwrap();
    assert_eq!(
        store.member(g.id, bob.id).await.unwrap().unwrap().role,
        Role::Member
    );
    assert_eq!(store.rooms_of(bob.id).await.unwrap()[0].role, Role::Member);

    let r = store.set_role(g.id, carol.id, Role::Admin).await;
    assert!(
        matches!(r, Err(Error::NotMember(id)) if id == g.id),
        "{r:?}"
    );
    assert_eq!(store.member(g.id, carol.id).await.unwrap(), None);
}

/// `members` is ordered by user id and `rooms_of` by room id, whatever the join order.
pub async fn members_ordered_and_rooms_of_ordered(store: Arc<dyn Store>) {
    let owner = user(&store, "owner").await;
    let mut users = Vec::new();
    for i in 0..6 {
        users.push(user(&store, &format!("u{i}")).await);
    }
    let mut rooms = Vec::new();
    for i in 0..5 {
        rooms.push(group(&store, &format!("g{i}"), &owner).await);
    }
    let big = rooms[0].id;
    for u in users.iter().rev() {
        store
            .add_member(big, u.id, Role::Member, ts(0))
            .await
            .unwrap();
    }
    let members = store.members(big).await.unwrap();
    let ids: Vec<UserId> = members.iter().map(|m| m.user).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert_eq!(ids.len(), 7);
    assert!(members.iter().all(|m| m.room == big));

    let joiner = &users[0];
    for r in rooms.iter().rev() {
        store
            .add_member(r.id, joiner.id, Role::Member, ts(0))
            .await
            .unwrap();
    }
    store
        .set_role(rooms[2].id, joiner.id, Role::Admin)
        .await
        .unwrap();
    let of: Vec<(RoomId, Role)> = store
        .rooms_of(joiner.id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.room.id, m.role))
        .collect();
    let mut expected: Vec<(RoomId, Role)> = rooms
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id, if i == 2 { Role::Admin } else { Role::Member }))
        .collect();
    expected.sort();
    assert_eq!(of, expected);
    let full = store.rooms_of(joiner.id).await.unwrap();
    for m in &full {
        assert_eq!(Some(&m.room), rooms.iter().find(|r| r.id == m.room.id));
    }
}

/// Membership calls on unknown rooms or users: errors where the trait names them, empty
/// answers elsewhere.
pub async fn members_unknown_room_or_user(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let g = group(&store, "g", &alice).await;
    let ghost_room = RoomId(u64::MAX);
    let ghost_user = UserId(u64::MAX);
    let r = store
        .add_member(ghost_room, alice.id, Role::Member, ts(0))
        .await;
    assert!(
        matches!(r, Err(Error::RoomNotFound(id)) if id == ghost_room),
        "{r:?}"
    );
    let r = store
        .add_member(g.id, ghost_user, Role::Member, ts(0))
        .await;
    assert!(matches!(r, Err(Error::UserNotFound(_))), "{r:?}");
    assert_eq!(store.members(g.id).await.unwrap().len(), 1);

    assert_eq!(store.members(ghost_room).await.unwrap(), vec![]);
    assert_eq!(store.member(ghost_room, alice.id).await.unwrap(), None);
    assert_eq!(store.member(g.id, ghost_user).await.unwrap(), None);
    assert_eq!(store.rooms_of(ghost_user).await.unwrap(), vec![]);
    assert!(!store.remove_member(ghost_room, alice.id).await.unwrap());
    assert!(!store.remove_member(g.id, ghost_user).await.unwrap());
    assert_code(
        store.set_role(g.id, ghost_user, Role::Admin).await,
        ErrorCode::NotMember,
    );
}

// ----- the log -----

/// Appends get seqs 1, 2, 3 and come back exactly as given.
pub async fn append_assigns_seqs_from_one(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let g = group(&store, "g", &alice).await;
    assert_eq!(store.latest_seq(g.id).await.unwrap(), Seq::ZERO);
    let mut stored = Vec::new();
    for (i, b) in ["one", "two", "three"].iter().enumerate() {
        let e = entry(g.id, Some(&alice), b, None);
        let a = store.append(e.clone()).await.unwrap();
        assert!(!a.duplicate);
        assert_eq!(
            a.entry,
            LogEntry {
                room: g.id,
                seq: Seq(i as u64 + 1),
                at: e.at,
                kind: e.kind,
            }
        );
        assert_eq!(store.latest_seq(g.id).await.unwrap(), Seq(i as u64 + 1));
        stored.push(a.entry);
    }
    assert_eq!(whole_log(&store, g.id).await, stored);
}

/// Each room has its own seq space.
pub async fn append_seqs_independent_per_room(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let a = group(&store, "a", &alice).await;
    let b = group(&store, "b", &alice).await;
    let c = group(&store, "c", &alice).await;
    let mut got = Vec::new();
    for r in [a.id, b.id, a.id, a.id, b.id, a.id] {
        got.push((r, post(&store, r, Some(&alice), "x").await.0));
    }
    assert_eq!(
        got,
        vec![
            (a.id, 1),
            (b.id, 1),
            (a.id, 2),
            (a.id, 3),
            (b.id, 2),
            (a.id, 4)
        ]
    );
    assert_eq!(store.latest_seq(a.id).await.unwrap(), Seq(4));
    assert_eq!(store.latest_seq(b.id).await.unwrap(), Seq(2));
    assert_eq!(store.latest_seq(c.id).await.unwrap(), Seq::ZERO);
    assert!(whole_log(&store, b.id).await.iter().all(|e| e.room == b.id));
}

/// A repeated `(sender, client_msg_id)` returns the original with `duplicate: true`, in the
/// same room or another, and stores nothing.
pub async fn append_idempotent_for_same_sender(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let a = group(&store, "a", &alice).await;
    let b = group(&store, "b", &alice).await;
    post(&store, a.id, Some(&alice), "before").await;
    let first = store
        .append(entry(a.id, Some(&alice), "original", Some("c-1")))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.entry.seq, Seq(2));

    let mut retry = entry(a.id, Some(&alice), "retry with other text", Some("c-1"));
    retry.at = ts(500);
    let again = store.append(retry).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.entry, first.entry, "the original, not the retry");

    let elsewhere = store
        .append(entry(b.id, Some(&alice), "other room", Some("c-1")))
        .await
        .unwrap();
    assert!(elsewhere.duplicate);
    assert_eq!(elsewhere.entry, first.entry);

    assert_eq!(store.latest_seq(a.id).await.unwrap(), Seq(2));
    assert_eq!(store.latest_seq(b.id).await.unwrap(), Seq::ZERO);
    assert_eq!(whole_log(&store, a.id).await.len(), 2);

    // The next append still gets the next seq: duplicates burn no seqs.
    assert_eq!(post(&store, a.id, Some(&alice), "after").await, Seq(3));
    let other = store
        .append(entry(a.id, Some(&alice), "new id", Some("c-2")))
        .await
        .unwrap();
    assert!(!other.duplicate);
    assert_eq!(other.entry.seq, Seq(4));
}

/// The same `client_msg_id` from a different sender is a different message.
pub async fn append_same_client_id_other_sender_not_duplicate(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let g = group(&store, "g", &alice).await;
    store
        .add_member(g.id, bob.id, Role::Member, ts(0))
        .await
        .unwrap();
    let a = store
        .append(entry(g.id, Some(&alice), "from alice", Some("same")))
        .await
        .unwrap();
    let b = store
        .append(entry(g.id, Some(&bob), "from bob", Some("same")))
        .await
        .unwrap();
    assert!(!a.duplicate && !b.duplicate);
    assert_eq!((a.entry.seq, b.entry.seq), (Seq(1), Seq(2)));
    assert_eq!(body(&b.entry), "from bob");
    assert_eq!(store.latest_seq(g.id).await.unwrap(), Seq(2));
}

/// Entries without a sender (system) or without a client id are never deduplicated.
pub async fn append_without_key_never_deduplicated(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let g = group(&store, "g", &alice).await;
    for i in 1..=3 {
        let sys = store
            .append(entry(g.id, None, "maintenance", Some("sys-1")))
            .await
            .unwrap();
        assert!(!sys.duplicate);
        assert_eq!(sys.entry.seq, Seq(2 * i - 1));
        let plain = store
            .append(entry(g.id, Some(&alice), "same text", None))
            .await
            .unwrap();
        assert!(!plain.duplicate);
        assert_eq!(plain.entry.seq, Seq(2 * i));
    }
    assert_eq!(store.latest_seq(g.id).await.unwrap(), Seq(6));
}

/// Sixteen concurrent appends of one `(sender, client_msg_id)` store it exactly once.
pub async fn append_idempotent_under_concurrency(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let g = group(&store, "g", &alice).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let store = store.clone();
        let barrier = barrier.clone();
        let e = entry(g.id, Some(&alice), &format!("attempt {i}"), Some("once"));
        tasks.spawn(async move {
            barrier.wait().await;
            store.append(e).await.unwrap()
        });
    }
    let results = tasks.join_all().await;
    assert_eq!(results.iter().filter(|a| !a.duplicate).count(), 1);
    let original = &results.iter().find(|a| !a.duplicate).unwrap().entry;
    assert!(results.iter().all(|a| &a.entry == original));
    assert_eq!(store.latest_seq(g.id).await.unwrap(), Seq(1));
}

/// Appending to a room that does not exist is `RoomNotFound`.
pub async fn append_unknown_room_refused(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let ghost = RoomId(u64::MAX);
    let r = store
        .append(entry(ghost, Some(&alice), "hi", Some("k")))
        .await;
    assert!(
        matches!(r, Err(Error::RoomNotFound(id)) if id == ghost),
        "{r:?}"
    );
    let r = store.append(entry(ghost, None, "hi", None)).await;
    assert!(matches!(r, Err(Error::RoomNotFound(_))), "{r:?}");
    // The refused append left no idempotency key behind.
    let g = group(&store, "g", &alice).await;
    let a = store
        .append(entry(g.id, Some(&alice), "hi", Some("k")))
        .await
        .unwrap();
    assert!(!a.duplicate);
}

/// An entry whose author is not a member of the room is refused with `NotMember` and leaves
/// no trace: no seq is used and its idempotency key stays free. Removal takes effect for the
/// very next append; the system needs no membership; a retry of a post stored while its
/// author was a member is refused once the author is gone, like any other post.
pub async fn append_requires_the_author_to_be_a_member(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let g = group(&store, "g", &alice).await;
    let r = store
        .append(entry(g.id, Some(&bob), "not yet", Some("b1")))
        .await;
    assert!(
        matches!(r, Err(Error::NotMember(id)) if id == g.id),
        "{r:?}"
    );
    assert_eq!(store.latest_seq(g.id).await.unwrap(), Seq::ZERO);

    store
        .add_member(g.id, bob.id, Role::Member, ts(0))
        .await
        .unwrap();
    let a = store
        .append(entry(g.id, Some(&bob), "now a member", Some("b1")))
        .await
        .unwrap();
    assert_eq!(
        (a.entry.seq, a.duplicate),
        (Seq(1), false),
        "the key stayed free"
    );

    assert!(store.remove_member(g.id, bob.id).await.unwrap());
    let r = store
        .append(entry(g.id, Some(&bob), "after removal", Some("b2")))
        .await;
    assert!(matches!(r, Err(Error::NotMember(_))), "{r:?}");
    let r = store
        .append(entry(g.id, Some(&bob), "now a member", Some("b1")))
        .await;
    assert!(
        matches!(r, Err(Error::NotMember(_))),
        "retry after removal: {r:?}"
    );

    let sys = store
        .append(entry(g.id, None, "system notice", None))
        .await
        .unwrap();
    assert_eq!(sys.entry.seq, Seq(2), "refusals used no seq");
    let log = whole_log(&store, g.id).await;
    assert_eq!(
        log.iter().map(body).collect::<Vec<_>>(),
        ["now a member", "system notice"]
    );
}

/// An empty room and an unknown room both have latest seq zero and an empty history.
pub async fn history_empty_and_unknown_room(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let g = group(&store, "g", &alice).await;
    for r in [g.id, RoomId(u64::MAX)] {
        assert_eq!(store.latest_seq(r).await.unwrap(), Seq::ZERO);
        for q in [
            HistoryQuery::Before(Seq(u64::MAX)),
            HistoryQuery::Before(Seq(1)),
            HistoryQuery::After(Seq::ZERO),
            HistoryQuery::After(Seq(5)),
        ] {
            assert_eq!(store.history(r, q, 50).await.unwrap(), vec![], "{q:?}");
        }
    }
}

/// `Before`/`After` pages: newest-before and oldest-after, always ascending, with every
/// boundary (first/last page, `limit` 0, seqs past either end).
pub async fn history_pagination_boundaries(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let g = group(&store, "g", &alice).await;
    let other = group(&store, "other", &alice).await;
    for i in 1..=10 {
        post(&store, g.id, Some(&alice), &format!("m{i}")).await;
        post(&store, other.id, Some(&alice), "noise").await;
    }
    let page = |q: HistoryQuery, limit: usize| {
        let store = store.clone();
        async move {
            let entries = store.history(g.id, q, limit).await.unwrap();
            assert!(entries.iter().all(|e| e.room == g.id));
            for e in &entries {
                assert_eq!(body(e), format!("m{}", e.seq.0));
            }
            seqs(&entries)
        }
    };
    use HistoryQuery::{After, Before};
    assert_eq!(page(Before(Seq(u64::MAX)), 3).await, vec![8, 9, 10]);
    assert_eq!(page(Before(Seq(11)), 3).await, vec![8, 9, 10]);
    assert_eq!(page(Before(Seq(10)), 3).await, vec![7, 8, 9]);
    assert_eq!(page(Before(Seq(8)), 3).await, vec![5, 6, 7]);
    assert_eq!(page(Before(Seq(3)), 5).await, vec![1, 2]);
    assert_eq!(page(Before(Seq(2)), 5).await, vec![1]);
    assert_eq!(page(Before(Seq(1)), 5).await, Vec::<u64>::new());
    assert_eq!(page(Before(Seq(0)), 5).await, Vec::<u64>::new());
    assert_eq!(
        page(Before(Seq(u64::MAX)), 100).await,
        (1..=10).collect::<Vec<_>>()
    );

    assert_eq!(page(After(Seq(0)), 3).await, vec![1, 2, 3]);
    assert_eq!(page(After(Seq(3)), 3).await, vec![4, 5, 6]);
    assert_eq!(page(After(Seq(8)), 5).await, vec![9, 10]);
    assert_eq!(page(After(Seq(9)), 5).await, vec![10]);
    assert_eq!(
        page(After(Seq(10)), 5).await,
        Vec::<u64>::new(),
        "after latest"
    );
    assert_eq!(page(After(Seq(11)), 5).await, Vec::<u64>::new());
    assert_eq!(page(After(Seq(u64::MAX)), 5).await, Vec::<u64>::new());
    assert_eq!(page(After(Seq(0)), 100).await, (1..=10).collect::<Vec<_>>());

    for q in [
        Before(Seq(u64::MAX)),
        Before(Seq(5)),
        After(Seq(0)),
        After(Seq(5)),
    ] {
        assert_eq!(page(q, 0).await, Vec::<u64>::new(), "limit 0, {q:?}");
        assert_eq!(page(q, 1).await.len(), 1, "limit 1, {q:?}");
        assert!(
            !page(q, usize::MAX).await.is_empty(),
            "limit usize::MAX, {q:?}"
        );
    }

    // Walking backwards from the end, page by page, yields the whole log.
    let mut back = Vec::new();
    let mut before = Seq(u64::MAX);
    loop {
        let p = page(Before(before), 4).await;
        let Some(&first) = p.first() else { break };
        assert!(
            p.iter().all(|&q| q < before.0),
            "Before({before}) returned {p:?}"
        );
        before = Seq(first);
        back.splice(0..0, p);
    }
    assert_eq!(back, (1..=10).collect::<Vec<_>>());
}

/// `limit` above [`MAX_HISTORY_PAGE`] is clamped to it.
pub async fn history_limit_clamped(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let g = group(&store, "g", &alice).await;
    let n = MAX_HISTORY_PAGE as u64 + 5;
    for _ in 0..n {
        post(&store, g.id, Some(&alice), "x").await;
    }
    let latest = store
        .history(
            g.id,
            HistoryQuery::Before(Seq(u64::MAX)),
            MAX_HISTORY_PAGE + 100,
        )
        .await
        .unwrap();
    assert_eq!(seqs(&latest), (6..=n).collect::<Vec<_>>());
    let oldest = store
        .history(g.id, HistoryQuery::After(Seq::ZERO), usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        seqs(&oldest),
        (1..=MAX_HISTORY_PAGE as u64).collect::<Vec<_>>()
    );
    let exact = store
        .history(g.id, HistoryQuery::After(Seq(3)), MAX_HISTORY_PAGE)
        .await
        .unwrap();
    assert_eq!(exact.len(), MAX_HISTORY_PAGE);
}

/// Appends `per_task` messages from each of `tasks` concurrent tasks, task `t`'s `i`-th
/// message going to `rooms[(t + i) % rooms.len()]`, and checks every room's seqs.
async fn concurrent_appends(
    store: Arc<dyn Store>,
    room_count: usize,
    tasks: usize,
    per_task: usize,
) {
    let alice = user(&store, "alice").await;
    let mut rooms = Vec::new();
    for i in 0..room_count {
        rooms.push(group(&store, &format!("r{i}"), &alice).await.id);
    }
    let rooms = Arc::new(rooms);
    let barrier = Arc::new(tokio::sync::Barrier::new(tasks));
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let store = store.clone();
        let rooms = rooms.clone();
        let barrier = barrier.clone();
        let alice = alice.clone();
        set.spawn(async move {
            barrier.wait().await;
            let mut got = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let r = rooms[(t + i) % rooms.len()];
                // Every other append carries a client id, so both paths run concurrently.
                let cmid = (i % 2 == 0).then(|| format!("t{t}-{i}"));
                let a = store
                    .append(entry(
                        r,
                        Some(&alice),
                        &format!("t{t}-{i}"),
                        cmid.as_deref(),
                    ))
                    .await
                    .unwrap();
                assert!(!a.duplicate);
                assert_eq!(a.entry.room, r);
                got.push(a.entry);
            }
            got
        });
    }
    let returned: Vec<LogEntry> = set.join_all().await.into_iter().flatten().collect();
    assert_eq!(returned.len(), tasks * per_task);

    for &r in rooms.iter() {
        let mut acked: Vec<&LogEntry> = returned.iter().filter(|e| e.room == r).collect();
        acked.sort_by_key(|e| e.seq);
        let n = acked.len() as u64;
        assert_eq!(
            acked.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
            (1..=n).collect::<Vec<_>>(),
            "room {r}: acknowledged seqs are exactly 1..=n"
        );
        assert_eq!(store.latest_seq(r).await.unwrap(), Seq(n));
        let log = whole_log(&store, r).await;
        assert_eq!(log.len() as u64, n);
        // The log holds exactly what each append acknowledged, at that seq.
        for (stored, ack) in log.iter().zip(&acked) {
            assert_eq!(stored, *ack);
        }
        // Each task's appends to one room keep the task's order.
        for t in 0..tasks {
            let prefix = format!("t{t}-");
            let mine: Vec<u64> = log
                .iter()
                .filter(|e| body(e).starts_with(&prefix))
                .map(|e| body(e)[prefix.len()..].parse().unwrap())
                .collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "task {t} order in room {r}"
            );
        }
    }
}

/// 32 tasks × 50 concurrent appends into one room get seqs exactly 1..=1600.
pub async fn concurrent_appends_one_room(store: Arc<dyn Store>) {
    concurrent_appends(store, 1, 32, 50).await;
}

/// 32 tasks × 50 concurrent appends spread over 4 rooms get gap-free seqs in each room.
pub async fn concurrent_appends_many_rooms(store: Arc<dyn Store>) {
    concurrent_appends(store, 4, 32, 50).await;
}

// ----- read markers -----

/// A new member's marker is zero; `mark_read` only moves it forward and returns it.
pub async fn read_markers_move_forward_only(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let g = group(&store, "g", &alice).await;
    store
        .add_member(g.id, bob.id, Role::Member, ts(0))
        .await
        .unwrap();
    for _ in 0..6 {
        post(&store, g.id, Some(&alice), "x").await;
    }
    let read_seq = |u: UserId| {
        let store = store.clone();
        async move {
            let all = store.unread(u).await.unwrap();
            all.iter().find(|x| x.room == g.id).unwrap().read_seq
        }
    };
    assert_eq!(read_seq(bob.id).await, Seq::ZERO);
    assert_eq!(store.mark_read(g.id, bob.id, Seq(3)).await.unwrap(), Seq(3));
    assert_eq!(store.mark_read(g.id, bob.id, Seq(1)).await.unwrap(), Seq(3));
    assert_eq!(
        store.mark_read(g.id, bob.id, Seq::ZERO).await.unwrap(),
        Seq(3)
    );
    assert_eq!(store.mark_read(g.id, bob.id, Seq(3)).await.unwrap(), Seq(3));
    assert_eq!(read_seq(bob.id).await, Seq(3));
    assert_eq!(store.mark_read(g.id, bob.id, Seq(6)).await.unwrap(), Seq(6));
    assert_eq!(read_seq(bob.id).await, Seq(6));
    // Markers are per user.
    assert_eq!(read_seq(alice.id).await, Seq::ZERO);
}

/// `mark_read` by a non-member is `NotMember`.
pub async fn read_markers_need_membership(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let g = group(&store, "g", &alice).await;
    post(&store, g.id, Some(&alice), "x").await;
    let r = store.mark_read(g.id, bob.id, Seq(1)).await;
    assert!(
        matches!(r, Err(Error::NotMember(id)) if id == g.id),
        "{r:?}"
    );
    assert_eq!(store.unread(bob.id).await.unwrap(), vec![]);
    // The trait does not say which of the two an unknown room is; it must not be `Ok`.
    let r = store.mark_read(RoomId(u64::MAX), alice.id, Seq(1)).await;
    assert!(
        matches!(r, Err(Error::NotMember(_) | Error::RoomNotFound(_))),
        "{r:?}"
    );
}

/// The read marker belongs to the membership: leaving and rejoining starts again from zero.
pub async fn read_markers_reset_on_rejoin(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let g = group(&store, "g", &alice).await;
    store
        .add_member(g.id, bob.id, Role::Member, ts(0))
        .await
        .unwrap();
    for _ in 0..4 {
        post(&store, g.id, Some(&alice), "x").await;
    }
    store.mark_read(g.id, bob.id, Seq(4)).await.unwrap();
    assert!(store.remove_member(g.id, bob.id).await.unwrap());
    assert!(
        store
            .add_member(g.id, bob.id, Role::Member, ts(1))
            .await
            .unwrap()
    );
    let u = store.unread(bob.id).await.unwrap();
    assert_eq!(u.len(), 1);
    assert_eq!(
        (u[0].read_seq, u[0].latest_seq, u[0].unread),
        (Seq::ZERO, Seq(4), 4)
    );
}

/// Unread counts messages after the marker, from anyone but the user (system included).
pub async fn unread_counts_others_messages_after_marker(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let g = group(&store, "g", &alice).await;
    store
        .add_member(g.id, bob.id, Role::Member, ts(0))
        .await
        .unwrap();
    let one = |u: UserId| {
        let store = store.clone();
        async move {
            let all = store.unread(u).await.unwrap();
            assert_eq!(all.len(), 1);
            assert_eq!(all[0].room, g.id);
            (all[0].read_seq.0, all[0].latest_seq.0, all[0].unread)
        }
    };
    assert_eq!(one(bob.id).await, (0, 0, 0));

    post(&store, g.id, Some(&alice), "a1").await; // 1
    post(&store, g.id, Some(&bob), "b1").await; // 2
    post(&store, g.id, None, "sys").await; // 3
    post(&store, g.id, Some(&alice), "a2").await; // 4
    post(&store, g.id, Some(&bob), "b2").await; // 5
    post(&store, g.id, Some(&bob), "b3").await; // 6

    assert_eq!(
        one(alice.id).await,
        (0, 6, 4),
        "bob's three and the system's one"
    );
    assert_eq!(
        one(bob.id).await,
        (0, 6, 3),
        "alice's two and the system's one"
    );

    store.mark_read(g.id, bob.id, Seq(1)).await.unwrap();
    assert_eq!(one(bob.id).await, (1, 6, 2));
    store.mark_read(g.id, bob.id, Seq(3)).await.unwrap();
    assert_eq!(one(bob.id).await, (3, 6, 1));
    store.mark_read(g.id, bob.id, Seq(4)).await.unwrap();
    assert_eq!(one(bob.id).await, (4, 6, 0), "only his own messages remain");
    store.mark_read(g.id, alice.id, Seq(5)).await.unwrap();
    assert_eq!(one(alice.id).await, (5, 6, 1));
    store.mark_read(g.id, alice.id, Seq(6)).await.unwrap();
    assert_eq!(one(alice.id).await, (6, 6, 0));

    // A duplicate append adds nothing to count.
    store
        .append(entry(g.id, Some(&bob), "k", Some("k")))
        .await
        .unwrap();
    store
        .append(entry(g.id, Some(&bob), "k", Some("k")))
        .await
        .unwrap();
    assert_eq!(one(alice.id).await, (6, 7, 1));
}

/// `unread` lists every room of the user, in room id order, and no others.
pub async fn unread_lists_rooms_in_id_order(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    assert_eq!(store.unread(alice.id).await.unwrap(), vec![]);
    assert_eq!(store.unread(UserId(u64::MAX)).await.unwrap(), vec![]);
    let mut rooms = Vec::new();
    for i in 0..4 {
        rooms.push(group(&store, &format!("g{i}"), &bob).await);
    }
    let not_mine = group(&store, "not mine", &bob).await;
    post(&store, not_mine.id, Some(&bob), "x").await;
    for (i, r) in rooms.iter().enumerate().rev() {
        store
            .add_member(r.id, alice.id, Role::Member, ts(0))
            .await
            .unwrap();
        for _ in 0..i {
            post(&store, r.id, Some(&bob), "x").await;
        }
    }
    let dm = store
        .direct_room(bob.id, alice.id, "bob & alice", ts(0))
        .await
        .unwrap();
    post(&store, dm.id, Some(&bob), "psst").await;

    let got: Vec<(RoomId, u64, u64)> = store
        .unread(alice.id)
        .await
        .unwrap()
        .iter()
        .map(|u| (u.room, u.latest_seq.0, u.unread))
        .collect();
    let mut expected: Vec<(RoomId, u64, u64)> = rooms
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id, i as u64, i as u64))
        .collect();
    expected.push((dm.id, 1, 1));
    expected.sort();
    assert_eq!(got, expected);
}

// ----- invites -----

/// An invite is stored as given (including `uses`) and found by its code.
pub async fn invites_create_and_get(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let g = group(&store, "g", &alice).await;
    let i = invite("code-1", g.id, &alice, ts(1000), Some(5));
    store.create_invite(i.clone()).await.unwrap();
    let mut used = invite("code-2", g.id, &alice, ts(2000), None);
    used.uses = 3;
    store.create_invite(used.clone()).await.unwrap();
    assert_eq!(store.invite("code-1").await.unwrap(), Some(i));
    assert_eq!(store.invite("code-2").await.unwrap(), Some(used));
    assert_eq!(store.invite("code-3").await.unwrap(), None);
    assert_eq!(
        store.invite("CODE-1").await.unwrap(),
        None,
        "codes are case-sensitive"
    );
}

/// Redeeming adds the user as a plain member and counts one use.
pub async fn invites_redeem_adds_member_and_counts_use(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    let g = group(&store, "g", &alice).await;
    store
        .create_invite(invite("c", g.id, &alice, ts(1000), Some(5)))
        .await
        .unwrap();
    assert_eq!(store.redeem_invite("c", bob.id, ts(10)).await.unwrap(), g);
    let m = store.member(g.id, bob.id).await.unwrap().unwrap();
    assert_eq!(m.role, Role::Member);
    assert_eq!(m.joined_at, ts(10));
    assert_eq!(store.invite("c").await.unwrap().unwrap().uses, 1);
    assert_eq!(store.redeem_invite("c", carol.id, ts(11)).await.unwrap(), g);
    assert_eq!(store.invite("c").await.unwrap().unwrap().uses, 2);
    assert_eq!(store.members(g.id).await.unwrap().len(), 3);
}

/// A member redeeming gets `Ok` and uses nothing, even on an invite that is used up or
/// expired since; their role is unchanged.
pub async fn invites_redeem_idempotent_for_members(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let g = group(&store, "g", &alice).await;
    store
        .create_invite(invite("one", g.id, &alice, ts(1000), Some(1)))
        .await
        .unwrap();
    assert_eq!(
        store.redeem_invite("one", alice.id, ts(0)).await.unwrap(),
        g
    );
    assert_eq!(store.invite("one").await.unwrap().unwrap().uses, 0);
    assert_eq!(
        store.member(g.id, alice.id).await.unwrap().unwrap().role,
        Role::Owner
    );

    store.redeem_invite("one", bob.id, ts(0)).await.unwrap();
    assert_eq!(store.invite("one").await.unwrap().unwrap().uses, 1);
    // A retry after taking the last use, or after expiry, still succeeds.
    assert_eq!(store.redeem_invite("one", bob.id, ts(1)).await.unwrap(), g);
    assert_eq!(
        store.redeem_invite("one", bob.id, ts(5000)).await.unwrap(),
        g
    );
    assert_eq!(store.invite("one").await.unwrap().unwrap().uses, 1);
    assert_eq!(store.members(g.id).await.unwrap().len(), 2);
}

/// Unknown, expired (`now >= expires_at`) and used-up invites fail with distinct errors
/// and change nothing.
pub async fn invites_errors_are_distinct(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    let g = group(&store, "g", &alice).await;

    let r = store.redeem_invite("nope", bob.id, ts(0)).await;
    assert!(matches!(r, Err(Error::InviteUnknown)), "{r:?}");

    store
        .create_invite(invite("exp", g.id, &alice, ts(100), None))
        .await
        .unwrap();
    let r = store.redeem_invite("exp", bob.id, ts(100)).await;
    assert!(
        matches!(r, Err(Error::InviteExpired)),
        "at expires_at: {r:?}"
    );
    let r = store.redeem_invite("exp", bob.id, ts(1000)).await;
    assert!(matches!(r, Err(Error::InviteExpired)), "{r:?}");
    assert_eq!(store.member(g.id, bob.id).await.unwrap(), None);
    assert_eq!(store.invite("exp").await.unwrap().unwrap().uses, 0);
    store.redeem_invite("exp", bob.id, ts(99)).await.unwrap();

    store
        .create_invite(invite("once", g.id, &alice, ts(1000), Some(1)))
        .await
        .unwrap();
    store.redeem_invite("once", carol.id, ts(0)).await.unwrap();
    let dave = user(&store, "dave").await;
    let r = store.redeem_invite("once", dave.id, ts(0)).await;
    assert!(matches!(r, Err(Error::InviteExhausted)), "{r:?}");
    assert_eq!(store.member(g.id, dave.id).await.unwrap(), None);
    assert_eq!(store.invite("once").await.unwrap().unwrap().uses, 1);

    store
        .create_invite(invite("zero", g.id, &alice, ts(1000), Some(0)))
        .await
        .unwrap();
    assert_code(
        store.redeem_invite("zero", dave.id, ts(0)).await,
        ErrorCode::InviteExhausted,
    );
    let mut preused = invite("preused", g.id, &alice, ts(1000), Some(2));
    preused.uses = 2;
    store.create_invite(preused).await.unwrap();
    assert_code(
        store.redeem_invite("preused", dave.id, ts(0)).await,
        ErrorCode::InviteExhausted,
    );
    assert_eq!(store.member(g.id, dave.id).await.unwrap(), None);
}

/// `max_uses: None` admits any number of users.
pub async fn invites_unlimited_uses(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let g = group(&store, "g", &alice).await;
    store
        .create_invite(invite("open", g.id, &alice, ts(1000), None))
        .await
        .unwrap();
    for i in 0..20 {
        let u = user(&store, &format!("u{i}")).await;
        store.redeem_invite("open", u.id, ts(0)).await.unwrap();
    }
    assert_eq!(store.invite("open").await.unwrap().unwrap().uses, 20);
    assert_eq!(store.members(g.id).await.unwrap().len(), 21);
}

/// Ten users racing for a three-use invite: exactly three get in, and `uses` is 3.
pub async fn invites_redeem_atomic_under_concurrency(store: Arc<dyn Store>) {
    let alice = user(&store, "alice").await;
    let g = group(&store, "g", &alice).await;
    store
        .create_invite(invite("race", g.id, &alice, ts(1000), Some(3)))
        .await
        .unwrap();
    let mut users = Vec::new();
    for i in 0..10 {
        users.push(user(&store, &format!("u{i}")).await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(users.len()));
    let mut tasks = tokio::task::JoinSet::new();
    for u in &users {
        let store = store.clone();
        let barrier = barrier.clone();
        let id = u.id;
        tasks.spawn(async move {
            barrier.wait().await;
            store.redeem_invite("race", id, ts(0)).await
        });
    }
    let results = tasks.join_all().await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 3, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(_) | Err(Error::InviteExhausted))),
        "{results:?}"
    );
    assert_eq!(store.invite("race").await.unwrap().unwrap().uses, 3);
    assert_eq!(store.members(g.id).await.unwrap().len(), 4);
}
