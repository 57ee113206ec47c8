//! Measures the server's resident memory per idle WebSocket connection.
//!
//! Run with: `cargo run --release -p transport-ws --example idle-memory -- 10000`
//! (add `--tungstenite-defaults` to compare with tungstenite's own buffer sizes).
//!
//! The process starts a server in memory, records its resident set size (VmRSS), then
//! re-runs itself as a child process that opens N authenticated WebSocket connections (a raw
//! handshake, then silence) and holds them. Once the server reports N open connections the
//! parent records VmRSS again: (after − before) / N is what one idle connection costs the
//! server — the socket's task, its session in the engine, tungstenite's buffers. Kernel socket
//! buffers are not in VmRSS. Clients live in the other process so they do not count. Linux
//! only (reads `/proc/self/status`); needs about N + 100 file descriptors in each process.

use chat_core::{Engine, Limits, Timestamp};
use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use transport_ws::{WsConfig, WsServer};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--clients") {
        return clients(&args[2], &args[3], args[4].parse()?);
    }
    let n: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let defaults = args.iter().any(|a| a == "--tungstenite-defaults");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(server(n, defaults))
}

async fn server(n: usize, tungstenite_defaults: bool) -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::builder(Arc::new(chat_store::MemoryStore::new()))
        .limits(Limits::default())
        .build();
    let user = engine
        .store()
        .create_user("idler", None, false, Timestamp::now())
        .await?;
    let token = engine.accounts().issue_token(user.id).await?;
    let mut config = WsConfig::default();
    config.max_connections = n + 10;
    config.max_connections_per_ip = n + 10;
    if tungstenite_defaults {
        config.read_buffer_bytes = 128 * 1024;
        config.write_buffer_bytes = 128 * 1024;
        config.max_write_buffer_bytes = usize::MAX;
    }
    let server = WsServer::new(engine, config)?;
    let socket = TcpSocket::new_v4()?;
    socket.bind("127.0.0.1:0".parse()?)?;
    let listener = socket.listen(4096)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let s = server.clone();
    let serving = tokio::spawn(async move {
        s.serve(listener, async {
            let _ = stopped.await;
        })
        .await
    });

    // Let the runtime and allocator settle before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib();
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--clients",
            &addr.to_string(),
            token.as_str(),
            &n.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let ready = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout).lines().next().transpose()
    })
    .await??;
    assert_eq!(ready.as_deref(), Some("ready"), "the client process failed");
    while server.stats().open < n as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib();
    let per = (after - before) as f64 * 1024.0 / n as f64;
    println!(
        "{n} idle connections ({}): VmRSS {before} KiB -> {after} KiB, {:.1} MiB total, {:.0} bytes per connection",
        if tungstenite_defaults {
            "tungstenite default buffers"
        } else {
            "WsConfig defaults"
        },
        (after - before) as f64 / 1024.0,
        per
    );
    child.kill()?;
    child.wait()?;
    let _ = stop.send(());
    serving.await??;
    Ok(())
}

fn clients(addr: &str, token: &str, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let request = format!(
            "GET /?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        let mut held = Vec::with_capacity(n);
        // A few hundred handshakes in flight at a time.
        for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
            let mut set = tokio::task::JoinSet::new();
            for _ in chunk {
                let request = request.clone();
                let addr = addr.to_string();
                set.spawn(async move {
                    let mut tcp = TcpStream::connect(addr).await?;
                    tcp.write_all(request.as_bytes()).await?;
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if tcp.read(&mut byte).await? == 0 {
                            return Err(std::io::Error::other("closed during handshake"));
                        }
                        head.push(byte[0]);
                    }
                    if !head.starts_with(b"HTTP/1.1 101") {
                        return Err(std::io::Error::other(
                            String::from_utf8_lossy(&head).into_owned(),
                        ));
                    }
                    Ok::<_, std::io::Error>(tcp)
                });
            }
            while let Some(r) = set.join_next().await {
                held.push(r??);
            }
        }
        println!("ready");
        // Hold the connections (silently: pings go unanswered, which is fine for the default
        // 45 s before the server reaps them) until the parent kills us.
        std::future::pending::<()>().await;
        drop(held);
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
