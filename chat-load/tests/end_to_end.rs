//! A tiny scenario against a real chat-server started in this process (in memory, on
//! 127.0.0.1:0): a few connections for about a second, over each wire, with zero loss.
//! No performance thresholds: this checks the tool's accounting, not the machine.

use chat_load::{Args, Wire};
use chat_server::{Config, Server};
use clap::Parser;

async fn server() -> Server {
    server_with(&[
        // One sender session sends faster than a person; registrations all come from one
        // address.
        "--requests-per-second",
        "10000",
        "--request-burst",
        "10000",
        "--auth-attempts-per-minute",
        "1000",
    ])
    .await
}

async fn server_with(flags: &[&str]) -> Server {
    let mut all = vec![
        "chat-server",
        "--http-addr",
        "127.0.0.1:0",
        "--tcp-addr",
        "127.0.0.1:0",
        "--memory",
        "--log",
        "warn",
    ];
    all.extend_from_slice(flags);
    let config = Config::try_from_args(all).expect("valid flags");
    Server::start(config).await.expect("server starts")
}

fn args(server: &Server, wire: Wire, extra: &[&str]) -> Args {
    let http = format!("http://{}", server.http_addr());
    let tcp = server.tcp_addr().expect("tcp enabled").to_string();
    let wire = match wire {
        Wire::Ws => "ws",
        Wire::WsPostcard => "ws-postcard",
        Wire::Tcp => "tcp",
    };
    let mut v = vec![
        "chat-load",
        "--http",
        &http,
        "--tcp-addr",
        &tcp,
        "--wire",
        wire,
        "--quiet",
        "--server-pid",
    ];
    let pid = std::process::id().to_string();
    v.push(&pid);
    v.extend_from_slice(extra);
    Args::try_parse_from(v).expect("valid args")
}

async fn tiny_scenario(wire: Wire) {
    let server = server().await;
    let a = args(
        &server,
        wire,
        &[
            "-n", "6", "-k", "2", "-s", "2", "--users", "3", "--rate", "40", "-d", "1", "--size",
            "120",
        ],
    );
    let r = chat_load::run(&a).await.expect("the run completes");
    eprintln!("{r}");
    assert_eq!(r.send_errors, 0, "{:?}", r.first_error);
    assert_eq!(r.acked, 40, "40 msg/s for 1 s");
    // Each room has 3 receivers and gets half of the sends.
    assert_eq!(r.loss.expected, 40 * 3);
    assert_eq!(r.loss.received, r.loss.expected, "{r}");
    assert_eq!((r.loss.lost, r.loss.extra, r.drops), (0, 0, 0), "{r}");
    assert!(r.drained);
    assert_eq!(r.latency.count, 120);
    assert_eq!(r.connect.count, 8);
    let s = r.server.expect("own pid sampled");
    assert!(s.rss_before_kib > 0);
    // The JSON line parses and carries the headline numbers.
    let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
    assert_eq!(json["loss"]["lost"], 0);
    assert!(!json["wire"].as_str().unwrap().is_empty());
    server.shutdown();
    server.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_json_scenario_loses_nothing() {
    tiny_scenario(Wire::Ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_postcard_scenario_loses_nothing() {
    tiny_scenario(Wire::WsPostcard).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_scenario_loses_nothing() {
    tiny_scenario(Wire::Tcp).await;
}

/// One account creating more rooms than its write burst: the server answers `429` with
/// `Retry-After`, and the tool waits it out instead of failing the setup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_past_the_servers_write_limit_waits_and_completes() {
    let server = server_with(&[
        "--requests-per-second",
        "50",
        "--request-burst",
        "3",
        "--auth-attempts-per-minute",
        "1000",
    ])
    .await;
    let a = args(
        &server,
        Wire::Ws,
        &[
            "-n", "7", "-k", "7", "-s", "1", "--users", "1", "--rate", "5", "-d", "0.5",
        ],
    );
    let r = chat_load::run(&a)
        .await
        .expect("the setup waits out the 429s");
    assert_eq!(r.send_errors, 0, "{:?}", r.first_error);
    assert!(r.acked > 0);
    assert_eq!(r.loss.lost, 0, "{r}");
    server.shutdown();
    server.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_rate_and_idle_modes_complete() {
    let server = server().await;
    let fast = args(
        &server,
        Wire::Tcp,
        &[
            "-n",
            "3",
            "-s",
            "1",
            "--rate",
            "0",
            "--in-flight",
            "4",
            "-d",
            "0.5",
        ],
    );
    let r = chat_load::run(&fast).await.expect("the run completes");
    assert!(r.acked > 0);
    assert_eq!(r.loss.lost, 0, "{r}");
    assert_eq!(r.loss.expected, 3 * r.acked);

    let idle = args(&server, Wire::Ws, &["-n", "5", "--idle", "-d", "0.3"]);
    let r = chat_load::run(&idle).await.expect("the run completes");
    assert_eq!((r.acked, r.loss.expected, r.drops), (0, 0, 0));
    assert_eq!(r.connect.count, 5);
    server.shutdown();
    server.wait().await;
}

#[tokio::test]
async fn remote_targets_are_refused_without_the_flag() {
    let a = Args::try_parse_from(["chat-load", "--http", "http://192.0.2.1:8080"]).unwrap();
    assert!(matches!(
        chat_load::run(&a).await,
        Err(chat_load::LoadError::Remote(_))
    ));
}
