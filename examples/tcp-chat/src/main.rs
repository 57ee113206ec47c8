//! Run with: cargo run -p tcp-chat
//!
//! A terminal chat over TCP on 127.0.0.1:9090: `nc 127.0.0.1 9090`, then `/nick <name>`.
//! See examples/README.md.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:9090").await?;
    println!("tcp-chat on 127.0.0.1:9090 — connect with: nc 127.0.0.1 9090");
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    tcp_chat::run(listener, ctrl_c).await?;
    Ok(())
}
