//! One run: setup, connect, traffic (or hold), drain, close — each phase bounded in time.

use crate::LoadError;
use crate::api::{Api, bounded};
use crate::args::{Args, Wire};
use crate::pacer::Pacer;
use crate::procfs::ProcSample;
use crate::report::{Report, ServerReport, ToolReport};
use crate::stats::{Latency, LossReport, ReceiverTally};
use chat_client::{Auth, Client, ClientConfig, Codec, Event, Events, ReconnectPolicy, Transport};
use chat_core::RoomId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Latency samples go to one of this many shared histograms (receiver index modulo), in
/// batches, so that thousands of receivers neither each own a 100 KiB histogram nor contend
/// on one lock.
const SHARDS: usize = 16;
/// Samples a receiver buffers before taking its shard's lock.
const BATCH: usize = 256;

/// The process-wide clock that send timestamps are taken on. Sender and receiver are the same
/// process, so a monotonic clock serves both and no clock synchronisation is involved.
fn now_ns() -> u64 {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

/// A message body: `<tag> <sender> <n> <send-time-ns> ` padded with `x` to `size` bytes. The
/// run's random tag tells this run's messages from anything else in the room.
pub fn make_body(tag: &str, sender: usize, n: u64, sent_ns: u64, size: usize) -> String {
    let mut body = format!("{tag} {sender} {n} {sent_ns} ");
    if body.len() < size {
        body.extend(std::iter::repeat_n('x', size - body.len()));
    }
    body
}

/// The send time carried by a body of this run (`None` for anything else).
///
/// Runs for every delivery, so it walks the header's bytes once instead of splitting the
/// body on spaces: `str::split`'s searcher was 5 % of the tool's CPU at saturation.
pub fn parse_sent_ns(body: &str, tag: &str) -> Option<u64> {
    // `{tag} {sender} {n} {sent_ns} …`: the tag must be the whole first field.
    let mut fields = body.strip_prefix(tag)?.as_bytes().split(|&b| b == b' ');
    if !fields.next()?.is_empty() {
        return None;
    }
    let digits = fields.nth(2)?;
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let d = d.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Counters shared by every task of a run.
#[derive(Debug, Default)]
struct Counters {
    connected: AtomicU64,
    attempted: AtomicU64,
    acked: AtomicU64,
    send_errors: AtomicU64,
    received: AtomicU64,
    last_receive_ns: AtomicU64,
    drops: AtomicU64,
    lagged: AtomicU64,
    acked_per_room: Vec<AtomicU64>,
    first_error: Mutex<Option<String>>,
    phase: Mutex<&'static str>,
}

impl Counters {
    fn note_error(&self, e: String) {
        let mut first = self.first_error.lock().expect("not poisoned");
        if first.is_none() {
            *first = Some(e);
        }
    }

    fn set_phase(&self, p: &'static str) {
        *self.phase.lock().expect("not poisoned") = p;
    }
}

/// One open connection and the task reading its events.
struct Conn {
    client: Client,
    reader: JoinHandle<u64>,
    /// Index of its room.
    room: usize,
}

/// Runs the load described by `args` (already validated) and returns the report.
pub async fn run(args: &Args) -> Result<Report, LoadError> {
    args.validate()?;
    let run_started = Instant::now();
    let users = args.user_count();
    let senders = if args.idle { 0 } else { args.senders };
    let total_conns = args.connections + senders;
    let prefix = args.prefix.clone().unwrap_or_else(random_prefix);
    let tag = format!("{prefix}:");
    let setup_bound = Duration::from_secs_f64(args.setup_timeout);
    let setup_deadline = Instant::now() + setup_bound;
    let sample = |pid: Option<u32>| pid.map(ProcSample::read).transpose();

    let counters = Arc::new(Counters {
        acked_per_room: (0..args.rooms).map(|_| AtomicU64::new(0)).collect(),
        ..Counters::default()
    });
    let (stop_progress, progress) = spawn_progress(args, counters.clone(), total_conns);

    // Accounts, rooms, memberships through the HTTP API.
    counters.set_phase("accounts");
    let api = Api::new(&args.http)?;
    let t = Instant::now();
    let tokens: Vec<String> = {
        let (api, kind, prefix) = (api.clone(), args.accounts, prefix.clone());
        within(
            setup_deadline,
            "account setup",
            setup_bound,
            bounded(users, args.http_concurrency, move |i| {
                let (api, name) = (api.clone(), format!("{prefix}u{i}"));
                async move { api.account(kind, &name).await }
            }),
        )
        .await??
    };
    counters.set_phase("rooms");
    let mut room_ids = Vec::with_capacity(args.rooms);
    for r in 0..args.rooms {
        let name = format!("{prefix}r{r}");
        room_ids.push(
            within(
                setup_deadline,
                "room setup",
                setup_bound,
                api.create_room(&tokens[owner_of(r, users)], &name),
            )
            .await??,
        );
    }
    // Every account joins every room one of its connections uses, unless it owns it.
    let mut pairs: Vec<(usize, usize)> = (0..total_conns)
        .map(|c| (c % users, room_of(c, args.connections, args.rooms)))
        .filter(|&(u, r)| u != owner_of(r, users))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    {
        let (api, tokens, rooms, pairs) = (
            api.clone(),
            Arc::new(tokens.clone()),
            Arc::new(room_ids.clone()),
            Arc::new(pairs),
        );
        let n = pairs.len();
        within(
            setup_deadline,
            "joining rooms",
            setup_bound,
            bounded(n, args.http_concurrency.max(16), move |i| {
                let (api, (u, r)) = (api.clone(), pairs[i]);
                let (token, room) = (tokens[u].clone(), rooms[r]);
                async move { api.join(&token, room).await }
            }),
        )
        .await??;
    }
    let accounts_secs = t.elapsed().as_secs_f64();
    drop(api);

    // Connections.
    counters.set_phase("connect");
    let server_before = sample(args.server_pid)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let shards: Arc<Vec<Mutex<Latency>>> =
        Arc::new((0..SHARDS).map(|_| Mutex::new(Latency::new())).collect());
    let connect_hist = Arc::new(Mutex::new(Latency::new()));
    let t = Instant::now();
    let conns: Vec<Conn> = {
        let base = base_config(args);
        let tokens = Arc::new(tokens);
        let room_ids = Arc::new(room_ids.clone());
        let (counters, shards, connect_hist, tag) = (
            counters.clone(),
            shards.clone(),
            connect_hist.clone(),
            Arc::<str>::from(tag.as_str()),
        );
        let receivers = args.connections;
        let rooms = args.rooms;
        let in_flight = args.in_flight;
        within(
            setup_deadline,
            "connecting",
            setup_bound,
            bounded(total_conns, args.connect_concurrency, move |i| {
                let mut config = base.clone();
                config.auth = Auth::Token(tokens[i % tokens.len()].clone());
                let receiving = i < receivers;
                if !receiving {
                    config.max_in_flight = in_flight + 4;
                    config.event_capacity = 64;
                }
                let room = room_of(i, receivers, rooms);
                let room_id = room_ids[room];
                let (counters, shards, hist, tag, stop) = (
                    counters.clone(),
                    shards.clone(),
                    connect_hist.clone(),
                    tag.clone(),
                    stop_rx.clone(),
                );
                async move {
                    let t0 = now_ns();
                    let (client, events) = Client::connect(config)
                        .await
                        .map_err(|source| LoadError::Client { index: i, source })?;
                    hist.lock()
                        .expect("not poisoned")
                        .record_nanos(now_ns() - t0);
                    if receiving {
                        client
                            .subscribe(room_id, None)
                            .await
                            .map_err(|source| LoadError::Client { index: i, source })?;
                    }
                    counters.connected.fetch_add(1, Ordering::Relaxed);
                    let shard = shards.clone();
                    let reader =
                        tokio::spawn(read_events(events, tag, counters, shard, i % SHARDS, stop));
                    Ok(Conn {
                        client,
                        reader,
                        room,
                    })
                }
            }),
        )
        .await??
    };
    let connect_secs = t.elapsed().as_secs_f64();
    // Let the server finish the work of the last connections (presence, queues) before the
    // memory reading.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_connected = sample(args.server_pid)?;

    // Traffic, or holding.
    let tool_start = ProcSample::current().ok();
    let server_cpu_start = sample(args.server_pid)?;
    let traffic_start = Instant::now();
    let received_at_start = counters.received.load(Ordering::Relaxed);
    let start_ns = now_ns();
    let mut max_lag = Duration::ZERO;
    let ack_hist = Arc::new(Mutex::new(Latency::new()));
    let mut drained = true;
    if args.idle {
        counters.set_phase("hold");
        tokio::time::sleep(args.duration()).await;
    } else {
        counters.set_phase("traffic");
        let deadline = traffic_start + args.duration();
        let per_sender_rate = (args.rate > 0.0).then(|| args.rate / senders as f64);
        let request_timeout = Duration::from_secs_f64(args.request_timeout);
        let mut set = JoinSet::new();
        for (j, c) in conns[args.connections..].iter().enumerate() {
            set.spawn(send_loop(SendLoop {
                client: c.client.clone(),
                room_id: room_ids[c.room],
                room: c.room,
                sender: j,
                tag: tag.clone(),
                size: args.size,
                rate: per_sender_rate,
                // Paced senders are spread over the interval rather than sending together.
                start: match per_sender_rate {
                    Some(_) => traffic_start + Pacer::phase(j, args.rate),
                    None => traffic_start,
                },
                deadline,
                in_flight: args.in_flight,
                request_timeout,
                counters: counters.clone(),
                ack_hist: ack_hist.clone(),
            }));
        }
        while let Some(lag) = set.join_next().await {
            max_lag = max_lag.max(lag.expect("sender task panicked"));
        }
        // Every acknowledged send is known now: wait for its deliveries, within --drain.
        counters.set_phase("drain");
        let mut per_room = vec![0u64; args.rooms];
        for c in &conns[..args.connections] {
            per_room[c.room] += 1;
        }
        let expected: u64 = per_room
            .iter()
            .enumerate()
            .map(|(r, n)| n * counters.acked_per_room[r].load(Ordering::Relaxed))
            .sum();
        let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain);
        while counters.received.load(Ordering::Relaxed) - received_at_start < expected {
            if Instant::now() >= drain_deadline {
                drained = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let traffic_secs = traffic_start.elapsed().as_secs_f64();
    let server_end = sample(args.server_pid)?;
    let tool_end = ProcSample::current().ok();

    // Stop the readers, collect their tallies, close every connection.
    counters.set_phase("close");
    let _ = stop_tx.send(true);
    let mut tallies = Vec::with_capacity(args.connections);
    let mut clients = Vec::with_capacity(conns.len());
    for (i, c) in conns.into_iter().enumerate() {
        let received = match tokio::time::timeout(Duration::from_secs(5), c.reader).await {
            Ok(Ok(n)) => n,
            _ => 0,
        };
        if i < args.connections {
            tallies.push(ReceiverTally {
                room: c.room,
                received,
            });
        }
        clients.push(c.client);
    }
    let clients = Arc::new(clients);
    let n = clients.len();
    let closing = bounded(n, 512, move |i| {
        let c = clients[i].clone();
        async move {
            c.close().await;
            Ok(())
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(30), closing).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_after = sample(args.server_pid)?;
    let _ = stop_progress.send(true);
    let _ = progress.await;

    // The figures.
    let mut latency = Latency::new();
    for s in shards.iter() {
        latency.merge(&s.lock().expect("not poisoned"));
    }
    let acked: Vec<u64> = counters
        .acked_per_room
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    let loss = LossReport::account(&acked, &tallies);
    let last_ns = counters.last_receive_ns.load(Ordering::Relaxed);
    let delivery_secs = if last_ns > start_ns {
        (last_ns - start_ns) as f64 / 1e9
    } else {
        traffic_secs
    };
    let deliveries_per_sec = if delivery_secs > 0.0 {
        loss.received as f64 / delivery_secs
    } else {
        0.0
    };
    let server = server_before.map(|before| {
        let connected = server_connected.unwrap_or(before);
        let end = server_end.unwrap_or(connected);
        let cpu = server_end
            .zip(server_cpu_start)
            .map(|(e, s)| e.cpu_secs - s.cpu_secs)
            .unwrap_or(0.0);
        ServerReport::new(
            before,
            connected,
            end,
            server_after,
            cpu,
            loss.received,
            total_conns,
        )
    });
    let tool = tool_start
        .zip(tool_end)
        .map(|(s, e)| ToolReport::new(e.cpu_secs - s.cpu_secs, e.rss_kib, loss.received));
    let first_error = counters.first_error.lock().expect("not poisoned").clone();
    Ok(Report {
        wire: args.wire,
        idle: args.idle,
        connections: args.connections,
        senders,
        rooms: args.rooms,
        users,
        rate: args.rate,
        in_flight: args.in_flight,
        size: args.size,
        duration_secs: args.duration,
        accounts_secs,
        connect_secs,
        connect: connect_hist.lock().expect("not poisoned").summary(),
        traffic_secs,
        attempted: counters.attempted.load(Ordering::Relaxed),
        acked: counters.acked.load(Ordering::Relaxed),
        send_errors: counters.send_errors.load(Ordering::Relaxed),
        send_rate: counters.acked.load(Ordering::Relaxed) as f64 / args.duration,
        max_sender_lag_ms: max_lag.as_secs_f64() * 1e3,
        loss,
        loss_ratio: loss.loss_ratio(),
        drained,
        deliveries_per_sec,
        latency: latency.summary(),
        ack_latency: ack_hist.lock().expect("not poisoned").summary(),
        drops: counters.drops.load(Ordering::Relaxed),
        lagged: counters.lagged.load(Ordering::Relaxed),
        first_error,
        server,
        tool,
        total_secs: run_started.elapsed().as_secs_f64(),
    })
}

/// The account that creates room `room`: round-robin, so that creating many rooms spreads
/// over the accounts' write budgets (`429` past `--request-burst` per user).
fn owner_of(room: usize, users: usize) -> usize {
    room % users.max(1)
}

/// Receivers take rooms round-robin; so do senders, counted from 0.
fn room_of(conn: usize, receivers: usize, rooms: usize) -> usize {
    if conn < receivers {
        conn % rooms
    } else {
        (conn - receivers) % rooms
    }
}

/// Awaits `fut` until `deadline`, or fails with [`LoadError::Timeout`].
async fn within<T>(
    deadline: Instant,
    what: &'static str,
    bound: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, LoadError> {
    tokio::time::timeout_at(deadline, fut)
        .await
        .map_err(|_| LoadError::Timeout(what, bound))
}

/// The client configuration every load connection starts from.
fn base_config(args: &Args) -> ClientConfig {
    let transport = match args.wire {
        Wire::Tcp => Transport::Tcp(args.tcp_addr.clone()),
        Wire::Ws | Wire::WsPostcard => Transport::Ws(args.ws()),
    };
    let mut c = ClientConfig::new(transport, Auth::Token(String::new()));
    c.codec = match args.wire {
        Wire::WsPostcard => Codec::Postcard,
        _ => Codec::Json,
    };
    // A load tool sends on purpose faster than a person: the server's limiter is what it
    // measures against, not a client-side one.
    c.pacing = None;
    // A drop is a result to count, not something to hide behind a reconnection.
    c.reconnect = ReconnectPolicy::never();
    c.request_timeout = Duration::from_secs_f64(args.request_timeout);
    c.connect_timeout = Duration::from_secs(30);
    // Room for a burst of deliveries between two polls of the reader task, so that the
    // client does not fall back to re-reading from the server (which would still deliver,
    // but late).
    c.event_capacity = 4096;
    c
}

/// Reads one connection's events until told to stop (or the connection ends); counts and
/// times this run's messages. Returns how many it received.
async fn read_events(
    mut events: Events,
    tag: Arc<str>,
    counters: Arc<Counters>,
    shards: Arc<Vec<Mutex<Latency>>>,
    shard: usize,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let mut received = 0u64;
    let mut batch: Vec<u64> = Vec::new();
    let flush = |batch: &mut Vec<u64>| {
        if !batch.is_empty() {
            let mut h = shards[shard].lock().expect("not poisoned");
            for &v in batch.iter() {
                h.record_nanos(v);
            }
            batch.clear();
        }
    };
    // Events come in bursts (one socket read holds several frames). A burst is handled
    // without going back to the `select!` between events, and the shared counters, which
    // every receiver task updates, are touched once per burst rather than once per event:
    // per-event, their cache lines bounced between the cores and cost the tool more than
    // the rest of the receive path.
    let mut open = true;
    while open {
        let mut next = tokio::select! {
            biased;
            _ = stop.changed() => break,
            ev = events.recv() => ev,
        };
        // One clock read per burst: its events were all in memory already, taken from the
        // stream within microseconds of each other (the clock was 5 % of the tool's CPU
        // when read per event at a million deliveries per second).
        let now = now_ns();
        let mut burst = 0u64;
        loop {
            match next {
                None => open = false,
                Some(Event::Message(entry)) => {
                    if let Some(sent) = parse_sent_ns(&entry.body, &tag) {
                        burst += 1;
                        batch.push(now.saturating_sub(sent));
                        if batch.len() >= BATCH {
                            flush(&mut batch);
                        }
                    }
                }
                Some(Event::Closed(reason)) => {
                    if !*stop.borrow() {
                        counters.drops.fetch_add(1, Ordering::Relaxed);
                        counters.note_error(format!("connection closed: {reason}"));
                    }
                    open = false;
                }
                Some(Event::Disconnected { reason, .. }) => {
                    counters.drops.fetch_add(1, Ordering::Relaxed);
                    counters.note_error(format!("connection dropped: {reason}"));
                }
                Some(Event::Lagged { dropped }) => {
                    counters.lagged.fetch_add(dropped, Ordering::Relaxed);
                }
                Some(Event::ServerError { code, message }) => {
                    counters.note_error(format!("server error {code:?}: {message}"));
                }
                Some(_) => {}
            }
            if !open {
                break;
            }
            match events.try_recv() {
                Some(ev) => next = Some(ev),
                None => break,
            }
        }
        if burst > 0 {
            received += burst;
            counters.received.fetch_add(burst, Ordering::Relaxed);
            counters.last_receive_ns.fetch_max(now, Ordering::Relaxed);
        }
    }
    flush(&mut batch);
    received
}

/// What one sender needs.
struct SendLoop {
    client: Client,
    room_id: RoomId,
    room: usize,
    sender: usize,
    tag: String,
    size: usize,
    /// Messages per second for this sender; `None`: as fast as acknowledged.
    rate: Option<f64>,
    start: Instant,
    deadline: Instant,
    in_flight: usize,
    request_timeout: Duration,
    counters: Arc<Counters>,
    ack_hist: Arc<Mutex<Latency>>,
}

/// Sends until the deadline, at most `in_flight` unacknowledged; waits (bounded) for the
/// outstanding acknowledgements. Returns how far it fell behind its schedule.
async fn send_loop(s: SendLoop) -> Duration {
    let permits = Arc::new(Semaphore::new(s.in_flight));
    let mut pacer = s.rate.map(|r| Pacer::new(r, s.start, s.deadline));
    let mut tasks = JoinSet::new();
    let mut n = 0u64;
    loop {
        match pacer.as_mut() {
            Some(p) => {
                if p.tick().await.is_none() {
                    break;
                }
            }
            None => {
                if Instant::now() >= s.deadline {
                    break;
                }
            }
        }
        let Ok(Ok(permit)) =
            tokio::time::timeout_at(s.deadline, permits.clone().acquire_owned()).await
        else {
            break;
        };
        while tasks.try_join_next().is_some() {}
        let sent_ns = now_ns();
        let body = make_body(&s.tag, s.sender, n, sent_ns, s.size);
        n += 1;
        let (client, room_id, room) = (s.client.clone(), s.room_id, s.room);
        let (counters, ack_hist) = (s.counters.clone(), s.ack_hist.clone());
        counters.attempted.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            match client.send(room_id, body).await {
                Ok(_) => {
                    counters.acked_per_room[room].fetch_add(1, Ordering::Relaxed);
                    counters.acked.fetch_add(1, Ordering::Relaxed);
                    ack_hist
                        .lock()
                        .expect("not poisoned")
                        .record_nanos(now_ns() - sent_ns);
                }
                Err(e) => {
                    counters.send_errors.fetch_add(1, Ordering::Relaxed);
                    counters.note_error(format!("send: {e}"));
                }
            }
            drop(permit);
        });
    }
    // Each send is bounded by the request timeout; this is the backstop.
    let _ = tokio::time::timeout(s.request_timeout + Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    pacer.map(|p| p.max_lag()).unwrap_or_default()
}

/// The once-a-second progress line on stderr.
fn spawn_progress(
    args: &Args,
    counters: Arc<Counters>,
    total: usize,
) -> (watch::Sender<bool>, JoinHandle<()>) {
    let (tx, mut rx) = watch::channel(false);
    let quiet = args.quiet;
    let task = tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let (mut last_recv, mut last_acked) = (0u64, 0u64);
        loop {
            tokio::select! {
                _ = rx.changed() => break,
                _ = tick.tick() => {}
            }
            if quiet {
                continue;
            }
            let c = &counters;
            let recv = c.received.load(Ordering::Relaxed);
            let acked = c.acked.load(Ordering::Relaxed);
            eprintln!(
                "[{:>6.1}s] {:<8} conns {}/{} | sent {} (+{}/s) errors {} | delivered {} (+{}/s) | drops {}",
                start.elapsed().as_secs_f64(),
                *c.phase.lock().expect("not poisoned"),
                c.connected.load(Ordering::Relaxed),
                total,
                acked,
                acked - last_acked,
                c.send_errors.load(Ordering::Relaxed),
                recv,
                recv - last_recv,
                c.drops.load(Ordering::Relaxed),
            );
            last_recv = recv;
            last_acked = acked;
        }
    });
    (tx, task)
}

/// `ld` and six random hex digits, from the clock and the pid (uniqueness across runs is all
/// that is needed).
fn random_prefix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mixed =
        (t ^ u64::from(std::process::id()).rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("ld{:06x}", mixed >> 40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_the_send_time_and_have_the_asked_size() {
        let b = make_body("ldabc123:", 7, 42, 123_456_789, 100);
        assert_eq!(b.len(), 100);
        assert_eq!(parse_sent_ns(&b, "ldabc123:"), Some(123_456_789));
        assert_eq!(parse_sent_ns(&b, "ldother:"), None);
        assert_eq!(parse_sent_ns("hello world", "ldabc123:"), None);
        // The tag is a whole field, and the time a whole number.
        assert_eq!(parse_sent_ns("ldabc123:x 7 42 5 xx", "ldabc123:"), None);
        assert_eq!(parse_sent_ns("t: 7 42 5x xx", "t:"), None);
        assert_eq!(parse_sent_ns("t: 7 42  xx", "t:"), None);
        assert_eq!(parse_sent_ns("t: 7 42", "t:"), None);
        assert_eq!(parse_sent_ns("t: 7 42 18446744073709551616", "t:"), None);
        assert_eq!(
            parse_sent_ns("t: 7 42 18446744073709551615", "t:"),
            Some(u64::MAX)
        );
        // Smaller than the header: the header alone.
        let small = make_body("t:", 0, 0, 5, 1);
        assert_eq!(parse_sent_ns(&small, "t:"), Some(5));
    }

    #[test]
    fn rooms_are_round_robin_for_receivers_and_senders() {
        assert_eq!(room_of(0, 10, 3), 0);
        assert_eq!(room_of(4, 10, 3), 1);
        assert_eq!(room_of(10, 10, 3), 0);
        assert_eq!(room_of(12, 10, 3), 2);
        let p = random_prefix();
        assert!(
            p.len() == 8 && p.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{p}"
        );
    }
}
