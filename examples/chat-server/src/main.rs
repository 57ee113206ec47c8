//! Run with: `cargo run --release -p chat-server`, then open <http://127.0.0.1:8080/>.
//!
//! `cargo run --release -p chat-server -- --help` lists every option. The server stops
//! gracefully on Ctrl-C or SIGTERM.

use chat_server::{Config, Server};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::from_env_and_args();
    let filter = match EnvFilter::try_new(&config.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "chat-server: invalid --log / RUST_LOG filter {:?}: {e}",
                config.log
            );
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let server = match Server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "chat-server: open http://{}/ in a browser (Ctrl-C stops)",
        server.http_addr()
    );
    shutdown_signal().await;
    tracing::info!("shutdown requested");
    server.shutdown();
    server.wait().await;
    ExitCode::SUCCESS
}

/// Ctrl-C, or SIGTERM (what `docker stop`, systemd and Kubernetes send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
