//! The slash commands of `chat-cli` (the same as the TCP line mode's).

/// One line of user input, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A plain line: a message to the current room. A line starting with `//` sends the text
    /// after the first `/` (so a message can start with a slash).
    Say(String),
    /// `/join <room>`: join a public room by name (or switch to a room you are in; `#<id>`
    /// names a room by id).
    Join(String),
    /// `/leave [room]`: leave a room (default: the current one).
    Leave(Option<String>),
    /// `/rooms`: your rooms, with unread counts.
    Rooms,
    /// `/who [room]`: a room's members and who is online (default: the current room).
    Who(Option<String>),
    /// `/msg <user> <text>`: a direct message.
    Msg {
        /// The recipient.
        to: String,
        /// The text.
        text: String,
    },
    /// `/history [n]`: the last `n` messages of the current room (default 20).
    History(Option<u32>),
    /// `/create <name>`: create a public room and enter it.
    Create(String),
    /// `/help`.
    Help,
    /// `/quit` (or `/exit`, or end of input).
    Quit,
}

/// The help text, one line per command.
pub const HELP: &[&str] = &[
    "commands:",
    "  /join <room>        join a public room (or switch to one of yours; #<id> for an id)",
    "  /leave [room]       leave a room (default: the current one)",
    "  /rooms              your rooms, with unread counts",
    "  /who [room]         members of a room and who is online",
    "  /msg <user> <text>  send a direct message",
    "  /history [n]        the last n messages of the current room (default 20)",
    "  /create <name>      create a public room and enter it",
    "  /help               this list",
    "  /quit               leave chat-cli (also Ctrl-D)",
    "any other line is sent to the current room (start it with // to send a leading /)",
];

/// Largest `/history` page the server serves.
const MAX_HISTORY: u32 = 1000;

/// Parses one input line. `Ok(None)` for a blank line; `Err` carries a message for the user.
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(None);
    }
    if let Some(text) = line.strip_prefix("//") {
        return Ok(Some(Command::Say(format!("/{text}"))));
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(Some(Command::Say(line.to_string())));
    };
    let rest = rest.trim();
    let (word, args) = match rest.split_once(char::is_whitespace) {
        Some((w, a)) => (w, a.trim()),
        None => (rest, ""),
    };
    let word = word.to_ascii_lowercase();
    let optional = |args: &str| (!args.is_empty()).then(|| args.to_string());
    let cmd = match word.as_str() {
        "join" | "j" => {
            if args.is_empty() {
                return Err("usage: /join <room>".into());
            }
            Command::Join(args.to_string())
        }
        "leave" | "part" => Command::Leave(optional(args)),
        "rooms" => no_args(&word, args, Command::Rooms)?,
        "who" => Command::Who(optional(args)),
        "msg" | "m" => {
            let usage = || "usage: /msg <user> <text>".to_string();
            let (to, text) = args.split_once(char::is_whitespace).ok_or_else(usage)?;
            let text = text.trim();
            if to.is_empty() || text.is_empty() {
                return Err(usage());
            }
            Command::Msg {
                to: to.to_string(),
                text: text.to_string(),
            }
        }
        "history" => {
            if args.is_empty() {
                Command::History(None)
            } else {
                match args.parse::<u32>() {
                    Ok(n) if (1..=MAX_HISTORY).contains(&n) => Command::History(Some(n)),
                    _ => return Err(format!("usage: /history [n], n from 1 to {MAX_HISTORY}")),
                }
            }
        }
        "create" => {
            if args.is_empty() {
                return Err("usage: /create <name>".into());
            }
            Command::Create(args.to_string())
        }
        "help" | "?" => Command::Help,
        "quit" | "exit" | "q" => no_args(&word, args, Command::Quit)?,
        "login" | "nick" => {
            return Err(format!(
                "/{word} is for the TCP line mode; chat-cli logs in from its command line \
                 (--user/--password, --guest or --token): restart it to change identity"
            ));
        }
        "" => return Err("a command name is missing after /; /help lists them".into()),
        other => {
            return Err(format!(
                "unknown command /{other}; /help lists the commands"
            ));
        }
    };
    Ok(Some(cmd))
}

fn no_args(word: &str, args: &str, cmd: Command) -> Result<Command, String> {
    if args.is_empty() {
        Ok(cmd)
    } else {
        Err(format!("/{word} takes no arguments"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse(line).unwrap().unwrap()
    }

    #[test]
    fn commands_parse_with_and_without_arguments() {
        assert_eq!(ok("/join lobby"), Command::Join("lobby".into()));
        assert_eq!(
            ok("/JOIN   Town Square  "),
            Command::Join("Town Square".into())
        );
        assert_eq!(ok("/leave"), Command::Leave(None));
        assert_eq!(ok("/leave team"), Command::Leave(Some("team".into())));
        assert_eq!(ok("/rooms"), Command::Rooms);
        assert_eq!(ok("/who"), Command::Who(None));
        assert_eq!(ok("/who #3"), Command::Who(Some("#3".into())));
        assert_eq!(
            ok("/msg bob  hi there  "),
            Command::Msg {
                to: "bob".into(),
                text: "hi there".into()
            }
        );
        assert_eq!(ok("/history"), Command::History(None));
        assert_eq!(ok("/history 5"), Command::History(Some(5)));
        assert_eq!(ok("/create my room"), Command::Create("my room".into()));
        assert_eq!(ok("/help"), Command::Help);
        assert_eq!(ok("/quit"), Command::Quit);
        assert_eq!(ok("/exit\r\n"), Command::Quit);
    }

    #[test]
    fn plain_lines_are_messages_and_double_slash_escapes() {
        assert_eq!(ok("hello"), Command::Say("hello".into()));
        assert_eq!(ok("  indented"), Command::Say("  indented".into()));
        assert_eq!(ok("//shrug"), Command::Say("/shrug".into()));
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("   \r\n").unwrap(), None);
    }

    #[test]
    fn bad_input_explains_itself() {
        for (line, hint) in [
            ("/join", "usage: /join"),
            ("/msg bob", "usage: /msg"),
            ("/msg", "usage: /msg"),
            ("/history x", "usage: /history"),
            ("/history 0", "usage: /history"),
            ("/history 1001", "usage: /history"),
            ("/create", "usage: /create"),
            ("/rooms now", "takes no arguments"),
            ("/frobnicate", "unknown command /frobnicate"),
            ("/", "missing"),
            ("/login a b", "restart"),
            ("/nick x", "restart"),
        ] {
            let err = parse(line).unwrap_err();
            assert!(err.contains(hint), "{line:?}: {err}");
        }
    }
}
