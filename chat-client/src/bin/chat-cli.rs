//! `chat-cli`: an interactive terminal chat client over TCP (binary mode) or WebSocket.
//!
//! ```text
//! chat-cli --tcp 127.0.0.1:9090 --user alice --password 'correct horse'
//! chat-cli --ws ws://127.0.0.1:8080/ws --token <token>
//! chat-cli --ws 'ws://127.0.0.1:8080/?user=carol'        # a dev server's development identity
//! ```
//!
//! On a terminal, input is edited with `rustyline-async`, which prints incoming messages above
//! the line being typed. With a pipe as input (`printf '/join lobby\nhi\n' | chat-cli ...`) it
//! reads plain lines and prints plain lines.

use chat_client::cli::{self, CliOptions, Console, Exit};
use chat_client::{Auth, Client, ClientConfig, Codec, Transport, WsTokenPlacement};
use chat_core::protocol::Secret;
use clap::{Parser, ValueEnum};
use rustyline_async::{Readline, ReadlineEvent, SharedWriter};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

/// Interactive chat client. Slash commands: /join, /leave, /rooms, /who, /msg, /history,
/// /create, /help, /quit; any other line goes to the current room.
#[derive(Debug, Parser)]
#[command(name = "chat-cli", version)]
struct Args {
    /// Connect over TCP binary mode to HOST:PORT (e.g. 127.0.0.1:9090).
    #[arg(
        long,
        value_name = "HOST:PORT",
        conflicts_with = "ws",
        required_unless_present = "ws"
    )]
    tcp: Option<String>,
    /// Connect over WebSocket to a ws:// URL (e.g. ws://127.0.0.1:8080/ws).
    #[arg(long, value_name = "URL")]
    ws: Option<String>,
    /// Log in as this user (with --password).
    #[arg(long, short = 'u', value_name = "NAME", requires = "password", conflicts_with_all = ["guest", "token"])]
    user: Option<String>,
    /// The password for --user (or set CHAT_PASSWORD, which keeps it out of `ps`).
    #[arg(long, short = 'p', env = "CHAT_PASSWORD", hide_env_values = true)]
    password: Option<Secret>,
    /// Sign in as a new guest with this name (where the server allows guests). The name is
    /// taken from then on: chat-cli prints the token to come back with (`--token`).
    #[arg(long, value_name = "NAME", conflicts_with = "token")]
    guest: Option<String>,
    /// A session token issued by the server's HTTP API (or set CHAT_TOKEN).
    #[arg(long, env = "CHAT_TOKEN", hide_env_values = true)]
    token: Option<Secret>,
    /// Where a WebSocket token goes: the Authorization header, the URL query, or the hello.
    #[arg(long, value_enum, default_value_t = TokenIn::Header)]
    token_in: TokenIn,
    /// WebSocket codec (TCP always uses postcard).
    #[arg(long, value_enum, default_value_t = CodecArg::Json)]
    codec: CodecArg,
    /// Room to enter after connecting.
    #[arg(long, value_name = "ROOM")]
    join: Option<String>,
    /// Messages shown when entering a room.
    #[arg(long, default_value_t = 20, value_name = "N")]
    history: u32,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CodecArg {
    Json,
    Postcard,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TokenIn {
    Header,
    Query,
    Hello,
}

impl Args {
    fn config(&self) -> Result<ClientConfig, String> {
        let transport = match (&self.tcp, &self.ws) {
            (Some(addr), None) => Transport::Tcp(addr.clone()),
            (None, Some(url)) => Transport::Ws(url.clone()),
            _ => return Err("give exactly one of --tcp or --ws".into()),
        };
        let auth = if let Some(user) = &self.user {
            Auth::Login {
                username: user.clone(),
                password: self
                    .password
                    .as_ref()
                    .map(|p| p.expose().to_string())
                    .unwrap_or_default(),
            }
        } else if let Some(guest) = &self.guest {
            Auth::Guest(guest.clone())
        } else if let Some(token) = &self.token {
            Auth::Token(token.expose().to_string())
        } else if matches!(transport, Transport::Ws(_)) {
            // The URL may carry the identity (`?token=`, a dev server's `?user=`).
            Auth::Transport
        } else {
            return Err("over TCP, log in with --user/--password, --guest or --token".into());
        };
        let mut config = ClientConfig::new(transport, auth);
        config.codec = match self.codec {
            CodecArg::Json => Codec::Json,
            CodecArg::Postcard => Codec::Postcard,
        };
        config.ws_token = match self.token_in {
            TokenIn::Header => WsTokenPlacement::Header,
            TokenIn::Query => WsTokenPlacement::Query,
            TokenIn::Hello => WsTokenPlacement::Hello,
        };
        Ok(config)
    }
}

/// The terminal: a line editor whose writer prints above the prompt.
struct Terminal {
    editor: Readline,
    out: SharedWriter,
}

impl Console for Terminal {
    async fn read_line(&mut self) -> Option<String> {
        loop {
            match self.editor.readline().await {
                Ok(ReadlineEvent::Line(line)) => {
                    if !line.trim().is_empty() {
                        self.editor.add_history_entry(line.clone());
                    }
                    return Some(line);
                }
                Ok(ReadlineEvent::Eof) => return None,
                // Ctrl-C clears the line; /quit or Ctrl-D leave.
                Ok(ReadlineEvent::Interrupted) => continue,
                Err(_) => return None,
            }
        }
    }

    fn print(&mut self, line: &str) {
        let _ = writeln!(self.out, "{line}");
    }

    fn set_prompt(&mut self, prompt: &str) {
        let _ = self.editor.update_prompt(prompt);
    }
}

/// Standard input is not a terminal: plain lines in, plain lines out.
struct Plain {
    lines: Lines<BufReader<Stdin>>,
}

impl Console for Plain {
    async fn read_line(&mut self) -> Option<String> {
        // `next_line` is cancel-safe: a partly read line stays in the buffer.
        self.lines.next_line().await.ok().flatten()
    }

    fn print(&mut self, line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    fn set_prompt(&mut self, _prompt: &str) {}
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chat-cli: {e}");
            return ExitCode::from(2);
        }
    };
    let target = config.transport.to_string();
    let (client, mut events) = match Client::connect(config).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chat-cli: {target}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(token) = client.guest_token() {
        // The guest's name is taken from now on: the token is its only way back.
        eprintln!(
            "chat-cli: signed in as the new guest {}; to come back as them later, use \
             --token {token} (keep it to yourself)",
            client.user().username
        );
    }
    let options = {
        let mut o = CliOptions::default();
        o.history_on_join = args.history;
        o.initial_room = args.join.clone();
        o
    };
    let result = if std::io::stdin().is_terminal() {
        let (editor, out) = match Readline::new("> ".into()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("chat-cli: cannot use the terminal: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut term = Terminal { editor, out };
        // The entered line is not left on screen: a message comes back from the room, in its
        // place in the log, and a command's output says what it did.
        term.editor.should_print_line_on(false, false);
        let r = cli::run(&client, &mut events, &mut term, &options).await;
        let _ = term.editor.flush();
        r
    } else {
        let mut plain = Plain {
            lines: BufReader::new(tokio::io::stdin()).lines(),
        };
        cli::run(&client, &mut events, &mut plain, &options).await
    };
    client.close().await;
    match result {
        Ok(Exit::Quit | Exit::EndOfInput) => ExitCode::SUCCESS,
        Ok(Exit::Closed(reason)) => {
            eprintln!("chat-cli: {reason}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("chat-cli: {e}");
            ExitCode::FAILURE
        }
    }
}
