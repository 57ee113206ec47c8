//! The README's `nc` sessions, replayed over sockets line for line: what it says you type is
//! sent, and what it says the server prints must arrive, exactly and in order.
//!
//! A block marked `<!-- nc-session: NAME -->` belongs to the connection NAME (opened by its
//! `$ nc …` line, continued by later blocks of the same name). In a block, a line starting with
//! `* `, `! ` or `[` is printed by the server; any other line is typed.

use crate::common::*;
use std::collections::HashMap;
use transport_tcp::TcpConfig;

const README: &str = include_str!("../../README.md");
const DEV_SERVER: &str = include_str!("../../examples/tcp-dev-server.rs");

struct Block {
    who: String,
    lines: Vec<String>,
}

fn sessions() -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = README.lines();
    while let Some(line) = lines.next() {
        let Some(who) = line
            .trim()
            .strip_prefix("<!-- nc-session:")
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            continue;
        };
        assert_eq!(lines.next().map(str::trim), Some("```text"));
        let body = lines
            .by_ref()
            .take_while(|l| l.trim() != "```")
            .map(str::to_string)
            .collect();
        out.push(Block {
            who: who.trim().to_string(),
            lines: body,
        });
    }
    out
}

fn printed(line: &str) -> bool {
    line.starts_with("* ") || line.starts_with("! ") || line.starts_with('[')
}

#[tokio::test]
async fn the_readme_nc_sessions_work_exactly_as_written() {
    // The README's server is the example's: in memory, guests allowed, on 127.0.0.1:9090.
    assert!(DEV_SERVER.contains("\"127.0.0.1:9090\""));
    assert!(DEV_SERVER.contains("allow_guests: true"));
    let h = Harness::start_with(TcpConfig::default(), guest_limits()).await;

    let blocks = sessions();
    assert!(blocks.len() >= 3, "the README's sessions were not found");
    let mut clients: HashMap<String, LineClient> = HashMap::new();
    let mut checked = 0;
    for block in blocks {
        for line in &block.lines {
            if let Some(command) = line.strip_prefix("$ ") {
                assert_eq!(command, "nc 127.0.0.1 9090");
                clients.insert(block.who.clone(), LineClient::connect(h.addr).await);
                continue;
            }
            let client = clients
                .get_mut(&block.who)
                .unwrap_or_else(|| panic!("{} types before connecting", block.who));
            if printed(line) {
                // A guest's token is random: the README writes `<token>` in its place.
                let got = mask_token(&client.line().await);
                assert_eq!(got, *line, "in {}'s session", block.who);
                checked += 1;
            } else {
                client.send(line).await;
            }
        }
    }
    assert!(checked > 20, "only {checked} lines were checked");
    // Alice's `/quit` ended her connection.
    let alice = clients.get_mut("alice").unwrap();
    assert_eq!(alice.try_line().await, None);
}
