//! Run with: cargo run -p relay — a topic relay on 127.0.0.1:8000; see examples/README.md.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let engine = chat_core::Engine::new(std::sync::Arc::new(chat_store::MemoryStore::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
    println!("relay on http://127.0.0.1:8000 (POST /register, POST /publish, GET /ws/<id>)");
    relay::run(listener, engine).await
}
