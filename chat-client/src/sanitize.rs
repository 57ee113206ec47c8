//! Making other users' text safe to print on a terminal.
//!
//! A message body, a username or a room name comes from someone else. Printed raw, an escape
//! sequence in it could move the cursor, recolour or clear the screen, rewrite the window
//! title, or (on some terminals) write to the clipboard or answer back into the input; a bare
//! carriage return could overprint a line with a forged one. So every control character is
//! replaced before printing — C0 (including ESC, CR, BEL, backspace), DEL and C1 (including
//! the 8-bit CSI `U+009B`) — and so are the Unicode bidirectional controls, which can make a
//! line display in a different order than it reads ("Trojan Source").

/// The visible stand-in for a removed character.
pub const REPLACEMENT: char = '\u{FFFD}';

/// `text` with every control character, escape sequence introducer and bidirectional
/// control replaced by [`REPLACEMENT`] (tabs become a space). Line feeds are kept only if
/// `multiline`; otherwise they are replaced too.
pub fn sanitize_with(text: &str, multiline: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' if multiline => out.push('\n'),
            '\t' => out.push(' '),
            c if is_unsafe(c) => out.push(REPLACEMENT),
            c => out.push(c),
        }
    }
    out
}

/// [`sanitize_with`] on one line: line feeds are replaced too. For names.
pub fn sanitize(text: &str) -> String {
    sanitize_with(text, false)
}

fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            // Bidirectional embeddings, overrides and isolates; marks.
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
            // Line and paragraph separators: new lines some terminals honour.
            | '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_controls_are_neutralised() {
        let evil = "hi\x1b[2J\x1b]0;owned\x07\r\x08\x7f\u{9b}31m";
        let clean = sanitize(evil);
        assert!(clean.chars().all(|c| !c.is_control()), "{clean:?}");
        assert!(clean.starts_with("hi"));
        assert_eq!(sanitize("tab\there"), "tab here");
    }

    #[test]
    fn bidi_overrides_are_removed_and_ordinary_text_kept() {
        assert_eq!(sanitize("a\u{202E}b\u{2066}c"), "a\u{FFFD}b\u{FFFD}c");
        let ok = "héllo ✓ 日本語 👋 — \"quotes\"";
        assert_eq!(sanitize(ok), ok);
    }

    #[test]
    fn line_feeds_only_survive_in_multiline_mode() {
        assert_eq!(sanitize_with("a\nb", true), "a\nb");
        assert_eq!(sanitize("a\nb"), "a\u{FFFD}b");
        assert_eq!(sanitize_with("a\r\nb", true), "a\u{FFFD}\nb");
    }
}
