//! `chat-load`: drives a running chat server and reports loss, throughput, latency and the
//! server's memory and CPU. See `chat-load --help` and the library docs (`chat_load`).

use chat_load::Args;
use clap::Parser;
use std::process::ExitCode;

/// The tool's own allocations (three strings for every decoded message, the event channel's
/// blocks) must not weigh on the figures: with glibc's allocator `malloc`/`free` were 17 % of
/// the tool's CPU at saturation, with mimalloc about 6 %.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    // Both cores: the receivers' event handling is the tool's heaviest work, and the
    // server shares the machine in the published runs, which the figures say.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chat-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            r = chat_load::run(&args) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    // Connections still open are dropped with the runtime; nothing waits for them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Some(Ok(report)) => {
            print!("{report}");
            println!("{}", report.json());
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            eprintln!("chat-load: {e}");
            ExitCode::FAILURE
        }
        None => {
            eprintln!("chat-load: interrupted");
            ExitCode::FAILURE
        }
    }
}
