//! The core of `chat-cli`, independent of the terminal: parse a line, act on it through the
//! [`Client`], and print what happens — replies, incoming messages, presence, typing,
//! reconnections — through a [`Console`].
//!
//! The binary plugs in a terminal console (a line editor that prints above the prompt, so
//! incoming messages never garble what the user is typing); tests plug in a scripted one.
//! Everything other users wrote is passed through [`crate::sanitize`] before it is printed.

mod command;

pub use command::{Command, HELP, parse};

use crate::client::{Client, HistoryFrom};
use crate::error::{ClientError, CloseReason};
use crate::event::{Event, Events};
use crate::sanitize::{sanitize, sanitize_with};
use chat_core::protocol::{Entry, MemberChange, RoomInfo, UnsubscribeReason};
use chat_core::{RoomId, RoomKind, Seq};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Where the CLI reads lines and prints output.
pub trait Console {
    /// The next line the user entered; `None` at the end of input (Ctrl-D, a closed pipe).
    /// Must be cancel-safe: the loop drops this future whenever an event arrives, and
    /// nothing typed may be lost.
    fn read_line(&mut self) -> impl Future<Output = Option<String>>;

    /// Prints one line, without disturbing a line the user is typing.
    fn print(&mut self, line: &str);

    /// Changes the prompt (it shows the current room, and who is typing).
    fn set_prompt(&mut self, prompt: &str);
}

/// Settings of the CLI loop.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CliOptions {
    /// Messages shown when entering a room. Default 20.
    pub history_on_join: u32,
    /// How long "bob is typing" stays in the prompt after bob's last typing event. Default 5 s.
    pub typing_shown_for: Duration,
    /// Rooms subscribed to at start (the user's rooms, by id). Default 100.
    pub max_rooms_at_start: usize,
    /// Room to enter at start, if any.
    pub initial_room: Option<String>,
}

impl Default for CliOptions {
    fn default() -> Self {
        CliOptions {
            history_on_join: 20,
            typing_shown_for: Duration::from_secs(5),
            max_rooms_at_start: 100,
            initial_room: None,
        }
    }
}

/// How the loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// `/quit`.
    Quit,
    /// The input ended.
    EndOfInput,
    /// The client stopped for good (revoked, credentials refused, gave up reconnecting).
    Closed(CloseReason),
}

/// Runs the interactive loop until `/quit`, the end of input, or the client closing.
///
/// At start it subscribes to the user's rooms (so messages from any of them are shown as
/// `[room] user: text`), then reads commands and prints events as they come.
pub async fn run<C: Console>(
    client: &Client,
    events: &mut Events,
    console: &mut C,
    options: &CliOptions,
) -> Result<Exit, ClientError> {
    let mut cli = Cli {
        client,
        console,
        options,
        me: client.user().username,
        current: None,
        rooms: BTreeMap::new(),
        subscribed: BTreeSet::new(),
        typing: BTreeMap::new(),
    };
    if let Err(e) = cli.start().await {
        return cli.ended(e);
    }
    loop {
        let expiry = cli.typing.values().min().copied();
        tokio::select! {
            line = cli.console.read_line() => match line {
                None => return Ok(Exit::EndOfInput),
                Some(line) => match cli.on_line(&line).await {
                    Ok(true) => return Ok(Exit::Quit),
                    Ok(false) => {}
                    Err(e) => return cli.ended(e),
                },
            },
            event = events.recv() => match event {
                None => return Ok(Exit::Closed(client.close_reason().unwrap_or(CloseReason::Closed))),
                Some(Event::Closed(reason)) => {
                    return cli.ended(ClientError::Closed(reason));
                }
                Some(event) => {
                    if let Err(e) = cli.on_event(event).await {
                        return cli.ended(e);
                    }
                }
            },
            _ = tokio::time::sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => {
                let now = Instant::now();
                cli.typing.retain(|_, until| *until > now);
                cli.update_prompt();
            }
        }
    }
}

struct Cli<'a, C> {
    client: &'a Client,
    console: &'a mut C,
    options: &'a CliOptions,
    me: String,
    current: Option<RoomInfo>,
    rooms: BTreeMap<RoomId, RoomInfo>,
    subscribed: BTreeSet<RoomId>,
    /// (room, username) → until when "typing" is shown.
    typing: BTreeMap<(RoomId, String), Instant>,
}

impl<C: Console> Cli<'_, C> {
    fn info(&mut self, text: &str) {
        self.console.print(&format!("* {text}"));
    }

    /// The client stopped (revoked, credentials refused, gave up reconnecting): say so and
    /// end the loop.
    fn ended(&mut self, e: ClientError) -> Result<Exit, ClientError> {
        match e {
            ClientError::Closed(reason) => {
                self.info(&format!("disconnected: {reason}"));
                Ok(Exit::Closed(reason))
            }
            other => Err(other),
        }
    }

    fn warn(&mut self, text: &str) {
        self.console.print(&format!("! {text}"));
    }

    /// Errors the user can act on are printed; a closed client ends the loop.
    fn report(&mut self, what: &str, e: ClientError) -> Result<(), ClientError> {
        if let ClientError::Closed(_) = e {
            return Err(e);
        }
        self.warn(&format!("{what}: {e}"));
        Ok(())
    }

    fn room_name(&self, room: RoomId) -> String {
        match self.rooms.get(&room) {
            Some(r) => sanitize(&r.name),
            None => format!("#{}", room.0),
        }
    }

    fn update_prompt(&mut self) {
        let mut prompt = match &self.current {
            Some(r) => sanitize(&r.name),
            None => String::new(),
        };
        if let Some(current) = &self.current {
            let typists: Vec<String> = self
                .typing
                .keys()
                .filter(|(room, _)| *room == current.id)
                .map(|(_, user)| sanitize(user))
                .collect();
            match typists.len() {
                0 => {}
                1 => prompt.push_str(&format!(" ({} is typing)", typists[0])),
                _ => prompt.push_str(&format!(" ({} are typing)", typists.join(", "))),
            }
        }
        prompt.push_str("> ");
        self.console.set_prompt(&prompt);
    }

    async fn start(&mut self) -> Result<(), ClientError> {
        let me = sanitize(&self.me);
        self.info(&format!("connected as {me}; /help lists the commands"));
        match self.client.rooms().await {
            Ok(rooms) => {
                let names: Vec<String> = rooms.iter().map(|r| sanitize(&r.room.name)).collect();
                for r in rooms.iter().take(self.options.max_rooms_at_start) {
                    self.rooms.insert(r.room.id, r.room.clone());
                    match self.client.subscribe(r.room.id, None).await {
                        Ok(_) => {
                            self.subscribed.insert(r.room.id);
                        }
                        Err(e) => self.report(&format!("could not open {}", r.room.name), e)?,
                    }
                }
                if names.is_empty() {
                    self.info("you are in no room yet: /join <room> or /create <name>");
                } else {
                    self.info(&format!("your rooms: {}", names.join(", ")));
                }
            }
            Err(e) => self.report("could not list your rooms", e)?,
        }
        if let Some(room) = self.options.initial_room.clone() {
            self.join(&room).await?;
        }
        self.update_prompt();
        Ok(())
    }

    /// Handles one input line; true on `/quit`.
    async fn on_line(&mut self, line: &str) -> Result<bool, ClientError> {
        let cmd = match parse(line) {
            Ok(Some(cmd)) => cmd,
            Ok(None) => return Ok(false),
            Err(msg) => {
                self.warn(&msg);
                return Ok(false);
            }
        };
        match cmd {
            Command::Quit => return Ok(true),
            Command::Help => {
                for line in HELP {
                    self.console.print(line);
                }
            }
            Command::Say(text) => {
                let Some(room) = self.current.as_ref().map(|r| r.id) else {
                    self.warn("you are not in a room: /join <room> first");
                    return Ok(false);
                };
                // No local echo: the room sends our own message back, in its place in the log.
                if let Err(e) = self.client.send(room, text).await {
                    self.report("not sent", e)?;
                }
            }
            Command::Join(name) => self.join(&name).await?,
            Command::Create(name) => match self.client.create_room(&name, RoomKind::Public).await {
                Ok(room) => {
                    self.rooms.insert(room.id, room.clone());
                    self.enter(room).await?;
                }
                Err(e) => self.report("could not create the room", e)?,
            },
            Command::Leave(name) => {
                let Some(room) = self.resolve(name.as_deref()) else {
                    return Ok(false);
                };
                match self.client.leave(room).await {
                    Ok(()) => {
                        let name = self.room_name(room);
                        self.forget(room);
                        self.info(&format!("you left {name}"));
                    }
                    Err(e) => self.report("could not leave", e)?,
                }
            }
            Command::Rooms => match self.client.rooms().await {
                Ok(rooms) if rooms.is_empty() => self.info("you are in no room"),
                Ok(rooms) => {
                    self.info("your rooms:");
                    for r in rooms {
                        self.rooms.insert(r.room.id, r.room.clone());
                        let mark = if self.current.as_ref().map(|c| c.id) == Some(r.room.id) {
                            " (current)"
                        } else {
                            ""
                        };
                        let kind = match r.room.kind {
                            RoomKind::Direct => "direct",
                            RoomKind::Group => "group",
                            RoomKind::Public => "public",
                        };
                        let line = format!(
                            "  {} #{} {kind}, {} unread{mark}",
                            sanitize(&r.room.name),
                            r.room.id.0,
                            r.unread
                        );
                        self.console.print(&line);
                    }
                }
                Err(e) => self.report("could not list rooms", e)?,
            },
            Command::Who(name) => {
                let Some(room) = self.resolve(name.as_deref()) else {
                    return Ok(false);
                };
                match self.client.members(room).await {
                    Ok(members) => {
                        let name = self.room_name(room);
                        let online = members.iter().filter(|m| m.online).count();
                        self.info(&format!(
                            "{name}: {} members, {online} online",
                            members.len()
                        ));
                        for m in members {
                            let role = format!("{:?}", m.role).to_lowercase();
                            let state = if m.online { "online" } else { "offline" };
                            let line = format!("  {} ({role}) {state}", sanitize(&m.user.username));
                            self.console.print(&line);
                        }
                    }
                    Err(e) => self.report("could not list members", e)?,
                }
            }
            Command::Msg { to, text } => match self.client.send_direct(&to, text).await {
                Ok(sent) => {
                    if !self.subscribed.contains(&sent.room) {
                        // A new conversation: show it from our message on.
                        let since = Seq(sent.seq.0.saturating_sub(1));
                        self.open(sent.room, Some(since)).await?;
                    }
                }
                Err(e) => self.report(&format!("not sent to {to}"), e)?,
            },
            Command::History(n) => {
                let Some(room) = self.current.as_ref().map(|r| r.id) else {
                    self.warn("you are not in a room: /join <room> first");
                    return Ok(false);
                };
                let n = n.unwrap_or(self.options.history_on_join.max(1));
                self.show_history(room, n).await?;
            }
        }
        Ok(false)
    }

    /// A room by name among the user's rooms (case-insensitive), by `#id`, or the current
    /// room when `name` is `None`. Prints why not when there is none.
    fn resolve(&mut self, name: Option<&str>) -> Option<RoomId> {
        let Some(name) = name else {
            let current = self.current.as_ref().map(|r| r.id);
            if current.is_none() {
                self.warn("you are not in a room: name one, or /join <room> first");
            }
            return current;
        };
        if let Some(id) = name.strip_prefix('#').and_then(|n| n.parse::<u64>().ok()) {
            return Some(RoomId(id));
        }
        let found = self
            .rooms
            .values()
            .find(|r| r.name.eq_ignore_ascii_case(name))
            .map(|r| r.id);
        if found.is_none() {
            self.warn(&format!("you are not in a room called {}", sanitize(name)));
        }
        found
    }

    async fn join(&mut self, name: &str) -> Result<(), ClientError> {
        let known = if let Some(id) = name.strip_prefix('#').and_then(|n| n.parse::<u64>().ok()) {
            self.rooms.get(&RoomId(id)).cloned()
        } else {
            self.rooms
                .values()
                .find(|r| r.name.eq_ignore_ascii_case(name))
                .cloned()
        };
        let room = match known {
            Some(room) => room,
            None => {
                let joined = match name.strip_prefix('#').and_then(|n| n.parse::<u64>().ok()) {
                    Some(id) => self.client.join_id(RoomId(id)).await,
                    None => self.client.join(name).await,
                };
                match joined {
                    Ok(room) => room,
                    Err(e) => return self.report(&format!("could not join {}", sanitize(name)), e),
                }
            }
        };
        self.rooms.insert(room.id, room.clone());
        self.enter(room).await
    }

    /// Makes `room` the current room: shows its recent history and makes sure it is
    /// subscribed.
    async fn enter(&mut self, room: RoomInfo) -> Result<(), ClientError> {
        let id = room.id;
        self.info(&format!("now in {}", sanitize(&room.name)));
        self.current = Some(room);
        self.update_prompt();
        let last = self.show_history(id, self.options.history_on_join).await?;
        if !self.subscribed.contains(&id) {
            // From the last entry shown: whatever arrived in between is replayed, once. With
            // no history wanted, only what comes next (not the newest `max_replay` entries).
            let since = match self.options.history_on_join {
                0 => None,
                _ => Some(last.unwrap_or(Seq(0))),
            };
            self.open(id, since).await?;
        }
        Ok(())
    }

    /// Subscribes and prints the replay.
    async fn open(&mut self, room: RoomId, since: Option<Seq>) -> Result<(), ClientError> {
        if !self.rooms.contains_key(&room) {
            // A direct room we just created: its `room` event comes after the `sent` reply,
            // so learn its name now.
            if let Ok(rooms) = self.client.rooms().await {
                for r in rooms {
                    self.rooms.insert(r.room.id, r.room);
                }
            }
        }
        match self.client.subscribe(room, since).await {
            Ok(sub) => {
                self.subscribed.insert(room);
                for e in &sub.entries {
                    self.print_entry(e);
                }
            }
            Err(e) => self.report(&format!("could not open {}", self.room_name(room)), e)?,
        }
        Ok(())
    }

    /// Prints the last `n` entries of a room; returns the seq of the newest one.
    async fn show_history(&mut self, room: RoomId, n: u32) -> Result<Option<Seq>, ClientError> {
        if n == 0 {
            return Ok(None);
        }
        match self
            .client
            .history(room, HistoryFrom::Latest, Some(n))
            .await
        {
            Ok(page) => {
                if page.entries.is_empty() {
                    self.info(&format!("no messages in {} yet", self.room_name(room)));
                } else if page.has_more {
                    self.info(&format!(
                        "last {} messages in {}:",
                        page.entries.len(),
                        self.room_name(room)
                    ));
                }
                for e in &page.entries {
                    self.print_entry(e);
                }
                Ok(page.entries.last().map(|e| e.seq))
            }
            Err(e) => {
                self.report("could not read the history", e)?;
                Ok(None)
            }
        }
    }

    fn print_entry(&mut self, e: &Entry) {
        let room = self.room_name(e.room);
        let body = sanitize_with(&e.body, true);
        let mut lines = body.split('\n');
        let first = lines.next().unwrap_or("");
        self.console
            .print(&format!("[{room}] {}: {first}", sanitize(&e.sender_name)));
        for more in lines {
            self.console.print(&format!("    {more}"));
        }
    }

    fn forget(&mut self, room: RoomId) {
        self.subscribed.remove(&room);
        self.rooms.remove(&room);
        self.typing.retain(|(r, _), _| *r != room);
        if self.current.as_ref().map(|c| c.id) == Some(room) {
            self.current = None;
        }
        self.update_prompt();
    }

    async fn on_event(&mut self, event: Event) -> Result<(), ClientError> {
        match event {
            Event::Message(e) => {
                self.typing.remove(&(e.room, e.sender_name.clone()));
                self.print_entry(&e);
                self.update_prompt();
            }
            Event::Gap { room, range } => {
                let name = self.room_name(room);
                self.info(&format!(
                    "{} older messages in {name} were not replayed (seqs {} to {})",
                    range.to.0.saturating_sub(range.from.0) + 1,
                    range.from.0,
                    range.to.0
                ));
            }
            Event::Presence { room, user, online } => {
                let state = if online { "is online" } else { "went offline" };
                let line = format!(
                    "{} {state} in {}",
                    sanitize(&user.username),
                    self.room_name(room)
                );
                self.info(&line);
            }
            Event::Typing { room, user } => {
                let until = Instant::now() + self.options.typing_shown_for;
                self.typing.insert((room, user.username), until);
                self.update_prompt();
            }
            Event::MemberChanged { room, user, change } => {
                let who = sanitize(&user.username);
                let name = self.room_name(room);
                let line = match change {
                    MemberChange::Joined => format!("{who} joined {name}"),
                    MemberChange::Left => format!("{who} left {name}"),
                    MemberChange::Kicked => format!("{who} was removed from {name}"),
                    MemberChange::Role(role) => {
                        format!(
                            "{who} is now {} of {name}",
                            format!("{role:?}").to_lowercase()
                        )
                    }
                };
                self.info(&line);
            }
            Event::Room(room) => {
                let id = room.id;
                self.rooms.insert(id, room.clone());
                if !self.subscribed.contains(&id) {
                    self.info(&format!("you are now in {}", sanitize(&room.name)));
                    // A new direct conversation or a room someone added us to: show what is
                    // there (the first direct message was sent before we could subscribe).
                    let last = self.show_history(id, self.options.history_on_join).await?;
                    self.open(id, Some(last.unwrap_or(Seq(0)))).await?;
                }
            }
            Event::Notice { room, body } => {
                let text = sanitize(&body);
                match room {
                    Some(room) => {
                        let line = format!("notice in {}: {text}", self.room_name(room));
                        self.info(&line);
                    }
                    None => self.info(&format!("notice: {text}")),
                }
            }
            Event::Unsubscribed { room, reason } => {
                if !self.subscribed.contains(&room) {
                    // Our own `/leave`, already reported.
                    return Ok(());
                }
                let name = self.room_name(room);
                self.forget(room);
                let line = match reason {
                    UnsubscribeReason::Left => format!("you left {name}"),
                    UnsubscribeReason::Kicked => format!("you were removed from {name}"),
                    UnsubscribeReason::Deleted => format!("{name} was deleted"),
                };
                self.info(&line);
            }
            Event::ServerError { code, message } => {
                self.warn(&format!(
                    "server: {} ({})",
                    sanitize(&message),
                    code.as_str()
                ));
            }
            Event::Lagged { dropped } => {
                self.info(&format!(
                    "{dropped} notifications skipped (the terminal fell behind)"
                ));
            }
            Event::Disconnected {
                reason,
                attempt,
                retry_in,
            } => {
                let reason = sanitize(&reason);
                let line = if attempt == 1 {
                    format!(
                        "connection lost ({reason}); reconnecting in {:.1}s",
                        retry_in.as_secs_f64()
                    )
                } else {
                    format!(
                        "still disconnected ({reason}); attempt {attempt} in {:.1}s",
                        retry_in.as_secs_f64()
                    )
                };
                self.info(&line);
            }
            Event::ResumeFailed {
                room,
                code,
                message,
            } => {
                let name = self.room_name(room);
                self.subscribed.remove(&room);
                self.warn(&format!(
                    "could not resume {name}: {} ({})",
                    sanitize(&message),
                    code.as_str()
                ));
            }
            Event::Reconnected {
                resumed, failed, ..
            } => {
                let rooms = if resumed == 1 { "room" } else { "rooms" };
                let mut line = format!("reconnected, resumed {resumed} {rooms}");
                if failed > 0 {
                    line.push_str(&format!(" ({failed} could not be resumed)"));
                }
                self.info(&line);
            }
            Event::Closed(_) => {}
        }
        Ok(())
    }
}
