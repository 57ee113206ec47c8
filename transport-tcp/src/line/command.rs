//! What a typed line means. Pure parsing, no state: `/join 5` is a room id, `/join lobby` a
//! name; resolving either against the rooms the connection knows happens in the reader.

use chat_core::RoomId;
use chat_core::protocol::Secret;

/// The most entries `/history` asks for (the protocol's largest history page).
pub(crate) const MAX_HISTORY: u32 = 1000;
/// What `/history` without a number asks for.
pub(crate) const DEFAULT_HISTORY: u32 = 20;

/// A room as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A number: a room id.
    Id(RoomId),
    /// Anything else: a room name.
    Name(String),
}

impl Target {
    fn parse(text: &str) -> Target {
        match text.parse::<u64>() {
            Ok(id) => Target::Id(RoomId(id)),
            Err(_) => Target::Name(text.to_string()),
        }
    }
}

/// A parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// `/login <user> <password>`; the password is the rest of the line.
    Login {
        /// The username.
        user: String,
        /// The password (`Secret`: `Debug` leaves it out).
        password: Secret,
    },
    /// `/nick <name>`: sign in as a guest.
    Nick(String),
    /// `/token <token>`: sign in with a session token (how a guest comes back).
    Token(Secret),
    /// `/create <name>`: the name is the rest of the line.
    Create(String),
    /// `/join <room>`.
    Join(Target),
    /// `/leave [room]`.
    Leave(Option<Target>),
    /// `/rooms`.
    Rooms,
    /// `/who [room]`.
    Who(Option<Target>),
    /// `/msg <user> <text>`.
    Msg {
        /// The recipient.
        to: String,
        /// The text, the rest of the line.
        body: String,
    },
    /// `/history [n]`.
    History(u32),
    /// `/help`.
    Help,
    /// `/quit`.
    Quit,
    /// A plain line, said in the current room (`//text` says `/text`).
    Say(String),
    /// An empty line: nothing to do.
    Empty,
    /// A command with missing or bad arguments: the usage line to show.
    Usage(&'static str),
    /// `/something` this server does not know.
    Unknown(String),
}

impl Command {
    /// Parses one line (without its line ending).
    pub(crate) fn parse(line: &str) -> Command {
        if line.trim().is_empty() {
            return Command::Empty;
        }
        let Some(rest) = line.strip_prefix('/') else {
            return Command::Say(line.to_string());
        };
        if rest.starts_with('/') {
            return Command::Say(rest.to_string());
        }
        let (name, args) = match rest.split_once(char::is_whitespace) {
            Some((name, args)) => (name, args.trim()),
            None => (rest, ""),
        };
        let optional = |args: &str| (!args.is_empty()).then(|| Target::parse(args));
        match name.to_ascii_lowercase().as_str() {
            "login" => match args.split_once(char::is_whitespace) {
                Some((user, password)) if !password.trim().is_empty() => Command::Login {
                    user: user.to_string(),
                    password: Secret::from(password.trim()),
                },
                _ => Command::Usage("usage: /login <user> <password>"),
            },
            "nick" if !args.is_empty() && !args.contains(char::is_whitespace) => {
                Command::Nick(args.to_string())
            }
            "nick" => Command::Usage("usage: /nick <name> (one word)"),
            "token" if !args.is_empty() && !args.contains(char::is_whitespace) => {
                Command::Token(Secret::from(args))
            }
            "token" => Command::Usage("usage: /token <token>"),
            "create" if !args.is_empty() => Command::Create(args.to_string()),
            "create" => Command::Usage("usage: /create <room name>"),
            "join" if !args.is_empty() => Command::Join(Target::parse(args)),
            "join" => Command::Usage("usage: /join <room name or id>"),
            "leave" | "part" => Command::Leave(optional(args)),
            "rooms" | "list" => Command::Rooms,
            "who" | "names" => Command::Who(optional(args)),
            "msg" => match args.split_once(char::is_whitespace) {
                Some((to, body)) if !body.trim().is_empty() => Command::Msg {
                    to: to.to_string(),
                    body: body.trim_start().to_string(),
                },
                _ => Command::Usage("usage: /msg <user> <text>"),
            },
            "history" if args.is_empty() => Command::History(DEFAULT_HISTORY),
            "history" => match args.parse::<u32>() {
                Ok(n) if (1..=MAX_HISTORY).contains(&n) => Command::History(n),
                _ => Command::Usage("usage: /history [n], n from 1 to 1000"),
            },
            "help" | "?" => Command::Help,
            "quit" | "exit" => Command::Quit,
            _ => Command::Unknown(name.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_typed_in_stay_out_of_debug_output() {
        let shown = format!(
            "{:?} {:?}",
            Command::parse("/login alice correct horse"),
            Command::parse("/token tok-abc")
        );
        assert!(
            !shown.contains("correct horse") && !shown.contains("tok-abc"),
            "{shown}"
        );
        assert!(shown.contains("alice"), "{shown}");
    }

    #[test]
    fn commands_and_their_arguments() {
        use Command::*;
        let cases = [
            (
                "/login alice correct horse",
                Login {
                    user: "alice".into(),
                    password: "correct horse".into(),
                },
            ),
            ("/login alice", Usage("usage: /login <user> <password>")),
            ("/nick bob", Nick("bob".into())),
            ("/NICK bob", Nick("bob".into())),
            ("/nick", Usage("usage: /nick <name> (one word)")),
            ("/token abc_-1", Token("abc_-1".into())),
            ("/token", Usage("usage: /token <token>")),
            ("/create my room", Create("my room".into())),
            ("/join lobby", Join(Target::Name("lobby".into()))),
            ("/join 7", Join(Target::Id(RoomId(7)))),
            ("/leave", Leave(None)),
            ("/leave lobby", Leave(Some(Target::Name("lobby".into())))),
            ("/rooms", Rooms),
            ("/who", Who(None)),
            (
                "/msg bob hi there",
                Msg {
                    to: "bob".into(),
                    body: "hi there".into(),
                },
            ),
            ("/msg bob", Usage("usage: /msg <user> <text>")),
            ("/history", History(20)),
            ("/history 5", History(5)),
            ("/history 0", Usage("usage: /history [n], n from 1 to 1000")),
            ("/history x", Usage("usage: /history [n], n from 1 to 1000")),
            ("/help", Help),
            ("/quit", Quit),
            ("/frobnicate now", Unknown("frobnicate".into())),
            ("hello world", Say("hello world".into())),
            ("//not a command", Say("/not a command".into())),
            ("   ", Empty),
            ("", Empty),
        ];
        for (line, expected) in cases {
            assert_eq!(Command::parse(line), expected, "{line:?}");
        }
    }
}
