//! Throwaway profiling probe (to be deleted).
#![allow(missing_docs)]
use chat_core::store::NewRoom;
use chat_core::*;
use chat_store::*;
use std::sync::Arc;
use std::time::Instant;

fn thread_cpu() -> Vec<(String, f64)> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc/self/task").unwrap() {
        let p = e.unwrap().path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap().trim().to_string();
        let stat = std::fs::read_to_string(p.join("stat")).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        out.push((comm, ticks / 100.0));
    }
    out
}
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1330_11eb);
    z ^ (z >> 31)
}
fn env(n: &str, d: u64) -> u64 { std::env::var(n).ok().map(|s| s.parse().unwrap()).unwrap_or(d) }

fn main() {
    let publishers = env("P", 256);
    let total = env("N", 300_000);
    let users = env("USERS", 1);
    let rooms = env("ROOMS", 1);
    let idmode = env("IDS", 0); // 0 = "p{p}-{i}", 1 = seq, 2 = hex32
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("p.db"), SqliteConfig::default()).await.unwrap());
        let mut us = vec![];
        for i in 0..users { us.push(store.create_user(&format!("u{i}"), None, false, Timestamp(0)).await.unwrap()); }
        let mut rs = vec![];
        for i in 0..rooms { rs.push(store.create_room(NewRoom { kind: RoomKind::Group, name: format!("r{i}"), created_by: Some(us[0].id), at: Timestamp(0) }).await.unwrap().id); }
        let c0 = thread_cpu();
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for p in 0..publishers {
            let store = store.clone();
            let u = us[(p % users) as usize].clone();
            let r = rs[(p % rooms) as usize];
            set.spawn(async move {
                for i in 0..total / publishers {
                    let id = i * publishers + p;
                    let cmid = match idmode { 0 => format!("p{p}-{i}"), 1 => format!("m{id:016}"), _ => format!("{:016x}{:016x}", mix(id), mix(!id)) };
                    store.append(NewEntry { room: r, at: Timestamp(0), kind: EntryKind::Message(Message {
                        sender: Some(u.id), sender_name: u.username.clone(),
                        body: "Sounds good, I'll push the fix after lunch and ping you when CI is green.".into(),
                        client_msg_id: Some(cmid) }) }).await.unwrap();
                }
            });
        }
        set.join_all().await;
        let wall = start.elapsed();
        let c1 = thread_cpu();
        let n = (total / publishers * publishers) as f64;
        println!("{} appends, {:?} wall, {:.0}/s, stats {:?}", n, wall, n / wall.as_secs_f64(), store.write_stats());
        let mut agg: std::collections::BTreeMap<String, f64> = Default::default();
        for (name, t) in &c1 { *agg.entry(name.clone()).or_default() += t; }
        for (name, t) in &c0 { *agg.entry(name.clone()).or_default() -= t; }
        for (name, t) in agg { if t > 0.0 { println!("  {name}: {:.2}s cpu, {:.2} us/append", t, t * 1e6 / n); } }
    });
}
