//! Splitting a byte stream into lines, with a maximum length and without trusting the bytes.

use crate::Error;
use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// One line from the peer, or why it was refused. Refusals are items, not errors: a bad line
/// costs the sender an error line, never the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineItem {
    /// A line without its `\n` or `\r\n`.
    Line(String),
    /// A line over the maximum. Reported as soon as the maximum is passed; the rest of the
    /// line is then discarded as it arrives, up to and including its `\n`.
    TooLong,
    /// A complete line that is not UTF-8.
    InvalidUtf8,
}

/// `\n`-terminated lines of at most `max` bytes (a `\r` before the `\n` is dropped and not
/// counted). Never holds more than `max + 1` bytes of one line: an over-long line is dropped
/// while it arrives, not buffered until its end.
///
/// tokio-util's `LinesCodec` is close, but it reports an over-long line or invalid UTF-8 as an
/// error, and a `FramedRead` ends its stream after a decoder error; here both are items, so the
/// connection stays usable.
#[derive(Debug)]
pub(crate) struct LineCodec {
    max: usize,
    /// Dropping the rest of an over-long line until its `\n`.
    discarding: bool,
    /// How far the buffer has been searched for a `\n`, so that a line arriving a byte at a
    /// time is not searched from its start on every byte.
    scanned: usize,
}

impl LineCodec {
    pub(crate) fn new(max: usize) -> LineCodec {
        LineCodec {
            max,
            discarding: false,
            scanned: 0,
        }
    }
}

impl Decoder for LineCodec {
    type Item = LineItem;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<LineItem>, Error> {
        loop {
            let newline = buf[self.scanned..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| self.scanned + i);
            if self.discarding {
                match newline {
                    Some(end) => {
                        buf.advance(end + 1);
                        self.scanned = 0;
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        buf.clear();
                        self.scanned = 0;
                        return Ok(None);
                    }
                }
            }
            let Some(end) = newline else {
                // `max + 1`: room for the `\r` of a `\r\n` that has not fully arrived.
                if buf.len() > self.max + 1 {
                    buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    return Ok(Some(LineItem::TooLong));
                }
                self.scanned = buf.len();
                return Ok(None);
            };
            let raw = buf.split_to(end + 1);
            self.scanned = 0;
            let mut line = &raw[..end];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.len() > self.max {
                return Ok(Some(LineItem::TooLong));
            }
            return Ok(Some(match std::str::from_utf8(line) {
                Ok(text) => LineItem::Line(text.to_string()),
                Err(_) => LineItem::InvalidUtf8,
            }));
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<LineItem>, Error> {
        // A last line without its `\n` was never finished (no Enter was pressed): it is
        // dropped, like a binary frame cut short, rather than acted on.
        let item = self.decode(buf)?;
        if item.is_none() {
            buf.clear();
            self.scanned = 0;
        }
        Ok(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut LineCodec, chunks: &[&[u8]]) -> Vec<LineItem> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                out.push(item);
            }
            assert!(buf.len() <= 16 + 1 + chunk.len(), "buffered {}", buf.len());
        }
        while let Some(item) = codec.decode_eof(&mut buf).unwrap() {
            out.push(item);
        }
        out
    }

    #[test]
    fn lines_crlf_long_lines_and_bad_utf8_in_any_chunking() {
        let input: &[u8] = b"hello\r\n\nworld\n0123456789abcdefXYZ\nafter\n\xff\xfe\nok\r\npartial";
        let expected = vec![
            LineItem::Line("hello".into()),
            LineItem::Line("".into()),
            LineItem::Line("world".into()),
            LineItem::TooLong,
            LineItem::Line("after".into()),
            LineItem::InvalidUtf8,
            LineItem::Line("ok".into()),
        ];
        assert_eq!(decode_all(&mut LineCodec::new(16), &[input]), expected);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode_all(&mut LineCodec::new(16), &bytes), expected);
        for size in 2..8 {
            let chunks: Vec<&[u8]> = input.chunks(size).collect();
            assert_eq!(
                decode_all(&mut LineCodec::new(16), &chunks),
                expected,
                "{size}"
            );
        }
    }

    #[test]
    fn exactly_the_maximum_is_accepted_with_or_without_cr() {
        let line = "x".repeat(16);
        for ending in ["\n", "\r\n"] {
            let input = format!("{line}{ending}");
            let chunks: Vec<&[u8]> = input.as_bytes().chunks(1).collect();
            assert_eq!(
                decode_all(&mut LineCodec::new(16), &chunks),
                vec![LineItem::Line(line.clone())]
            );
        }
        let input = format!("{line}y\n");
        assert_eq!(
            decode_all(&mut LineCodec::new(16), &[input.as_bytes()]),
            vec![LineItem::TooLong]
        );
    }

    #[test]
    fn a_huge_line_is_reported_once_and_never_buffered() {
        let mut codec = LineCodec::new(16);
        let mut buf = BytesMut::new();
        let mut items = Vec::new();
        for _ in 0..10_000 {
            buf.extend_from_slice(b"0123456789");
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                items.push(item);
            }
            assert!(buf.len() <= 17);
        }
        buf.extend_from_slice(b"tail\nnext\n");
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            items.push(item);
        }
        assert_eq!(
            items,
            vec![LineItem::TooLong, LineItem::Line("next".into())]
        );
    }
}
