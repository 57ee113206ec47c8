//! Keeps `docs/PROTOCOL.md` true to the code.
//!
//! Conventions in the document, checked here:
//! - Every ```` ```json ```` block is preceded by `<!-- client -->` or `<!-- server -->` and
//!   holds one or more frames (a stream of JSON values, e.g. one per line). Client frames must
//!   decode with `Codec::Json.decode_request`, and re-encoding them must give back the same
//!   fields (so a misspelt optional field, which serde would silently ignore, is caught).
//!   Server frames must decode with `Codec::Json.decode_response` and re-encode to exactly the
//!   same JSON value.
//! - A ```` ```text ```` block preceded by `<!-- postcard -->` is a hex dump of the postcard
//!   encoding of the single frame in the JSON block just before it.
//! - The tables after `<!-- client-variants -->` / `<!-- server-variants -->` give each frame
//!   type's postcard variant index; every listed type has an example and every example's type
//!   is listed with the index postcard really uses.
//! - Every `ErrorCode` has a row in the error table with its postcard index; every close
//!   reason and every `Limits` field (with its default) has a row too.

use chat_core::{CloseReason, Codec, ErrorCode, Limits, Request, Response};
use serde_json::Value;
use std::collections::BTreeMap;

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// A fenced code block, with the `<!-- marker -->` on the last non-empty line before it.
struct Block {
    line: usize,
    lang: String,
    marker: Option<String>,
    body: String,
}

fn marker_of(line: &str) -> Option<String> {
    let m = line.trim().strip_prefix("<!--")?.strip_suffix("-->")?;
    Some(m.trim().to_string())
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = doc.lines().enumerate();
    let mut previous: Option<&str> = None;
    while let Some((i, line)) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(lang) = trimmed.strip_prefix("```") {
            let mut body = String::new();
            for (_, l) in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            out.push(Block {
                line: i + 1,
                lang: lang.trim().to_string(),
                marker: previous.and_then(marker_of),
                body,
            });
            previous = None;
        } else if !trimmed.is_empty() {
            previous = Some(trimmed);
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Frame {
    Client(Request),
    Server(Response),
}

impl Frame {
    fn postcard(&self) -> Vec<u8> {
        match self {
            Frame::Client(r) => Codec::Postcard.encode_request(r).to_vec(),
            Frame::Server(r) => Codec::Postcard.encode_response(r).to_vec(),
        }
    }
}

struct Example {
    line: usize,
    tag: String,
    frame: Frame,
}

/// Everything the document's examples say, and everything wrong with them.
struct Report {
    examples: Vec<Example>,
    postcard_dumps: usize,
    problems: Vec<String>,
}

/// Removes `null` members, recursively: a request may omit an optional field that the encoder
/// writes as `null`.
fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

fn json_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("the codec emits valid JSON")
}

fn check_json(line: usize, direction: Option<&str>, value: &Value) -> Result<Frame, String> {
    let bytes = serde_json::to_vec(value).expect("a JSON value serializes");
    let as_client = Codec::Json.decode_request(&bytes);
    let as_server = Codec::Json.decode_response(&bytes);
    match direction {
        Some("client") => {
            let req = as_client.map_err(|e| {
                let hint = if as_server.is_ok() {
                    " (it decodes as a server frame: wrong marker?)"
                } else {
                    ""
                };
                format!("line {line}: client example {value} does not decode: {e}{hint}")
            })?;
            let back = json_value(&Codec::Json.encode_request(&req));
            if strip_nulls(back.clone()) != strip_nulls(value.clone()) {
                return Err(format!(
                    "line {line}: client example {value} re-encodes as {back}: \
                     a field is misspelt, ignored or changed"
                ));
            }
            Ok(Frame::Client(req))
        }
        Some("server") => {
            let resp = as_server.map_err(|e| {
                let hint = if as_client.is_ok() {
                    " (it decodes as a client frame: wrong marker?)"
                } else {
                    ""
                };
                format!("line {line}: server example {value} does not decode: {e}{hint}")
            })?;
            let back = json_value(&Codec::Json.encode_response(&resp));
            if &back != value {
                return Err(format!(
                    "line {line}: server example {value} is not what the codec produces: {back}"
                ));
            }
            Ok(Frame::Server(resp))
        }
        other => Err(format!(
            "line {line}: json block needs a <!-- client --> or <!-- server --> marker (found \
             {other:?}); it decodes as a client frame: {}, as a server frame: {}",
            as_client.is_ok(),
            as_server.is_ok()
        )),
    }
}

fn parse_hex(body: &str) -> Result<Vec<u8>, String> {
    body.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).map_err(|e| format!("{b:?}: {e}")))
        .collect()
}

fn check_postcard(block: &Block, previous: &[Frame]) -> Result<(), String> {
    let line = block.line;
    let [frame] = previous else {
        return Err(format!(
            "line {line}: a postcard dump must follow a json block holding exactly one frame \
             (found {})",
            previous.len()
        ));
    };
    let bytes = parse_hex(&block.body).map_err(|e| format!("line {line}: bad hex: {e}"))?;
    let expected = frame.postcard();
    if bytes != expected {
        return Err(format!(
            "line {line}: postcard dump {} should be {}",
            hex(&bytes),
            hex(&expected)
        ));
    }
    let decoded_ok = match frame {
        Frame::Client(r) => Codec::Postcard.decode_request(&bytes).ok().as_ref() == Some(r),
        Frame::Server(r) => Codec::Postcard.decode_response(&bytes).ok().as_ref() == Some(r),
    };
    if !decoded_ok {
        return Err(format!(
            "line {line}: postcard dump does not decode back to the frame"
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn report(doc: &str) -> Report {
    let mut report = Report {
        examples: Vec::new(),
        postcard_dumps: 0,
        problems: Vec::new(),
    };
    let mut previous: Vec<Frame> = Vec::new();
    for block in blocks(doc) {
        let marker = block.marker.as_deref();
        if block.lang == "json" {
            previous.clear();
            let mut values = Vec::new();
            for value in serde_json::Deserializer::from_str(&block.body).into_iter::<Value>() {
                match value {
                    Ok(v) => values.push(v),
                    Err(e) => {
                        report.problems.push(format!(
                            "line {}: json block is not valid JSON: {e}",
                            block.line
                        ));
                        values.clear();
                        break;
                    }
                }
            }
            if values.is_empty() {
                report
                    .problems
                    .push(format!("line {}: json block holds no frame", block.line));
            }
            for value in &values {
                match check_json(block.line, marker, value) {
                    Ok(frame) => {
                        let tag = value["type"].as_str().unwrap_or_default().to_string();
                        previous.push(frame.clone());
                        report.examples.push(Example {
                            line: block.line,
                            tag,
                            frame,
                        });
                    }
                    Err(problem) => report.problems.push(problem),
                }
            }
        } else if marker == Some("postcard") {
            report.postcard_dumps += 1;
            if let Err(problem) = check_postcard(&block, &previous) {
                report.problems.push(problem);
            }
        }
    }
    report
}

#[test]
fn every_example_is_exactly_what_the_codecs_produce_or_accept() {
    let report = report(&doc());
    assert!(
        report.problems.is_empty(),
        "docs/PROTOCOL.md disagrees with the codecs:\n{}",
        report.problems.join("\n")
    );
    assert!(report.examples.len() > 40, "the examples were not found");
    assert!(
        report.postcard_dumps > 0,
        "the postcard dumps were not found"
    );
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> u64 {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let b = bytes[*pos];
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

/// The variant index of a frame in its postcard envelope: after `id: Option<u64>`.
fn variant_index(frame: &Frame) -> u64 {
    let bytes = frame.postcard();
    let mut pos = 1;
    if bytes[0] == 1 {
        read_varint(&bytes, &mut pos);
    }
    read_varint(&bytes, &mut pos)
}

/// The rows `| cell | cell | ... |` of the table that follows `<!-- marker -->`.
fn table_after(doc: &str, marker: &str) -> Vec<Vec<String>> {
    let needle = format!("<!-- {marker} -->");
    let mut lines = doc.lines().skip_while(|l| l.trim() != needle).skip(1);
    let mut rows = Vec::new();
    for line in lines.by_ref() {
        let line = line.trim();
        if line.is_empty() && rows.is_empty() {
            continue;
        }
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect();
        if cells
            .iter()
            .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
        {
            continue; // the separator row
        }
        rows.push(cells);
    }
    assert!(!rows.is_empty(), "no table after {needle}");
    // Drop the header row.
    rows.remove(0);
    rows
}

#[test]
fn variant_tables_match_postcard_and_every_frame_type_has_an_example() {
    let doc = doc();
    let report = report(&doc);
    for (marker, is_client) in [("client-variants", true), ("server-variants", false)] {
        let mut table: BTreeMap<String, u64> = BTreeMap::new();
        for (expected, row) in table_after(&doc, marker).iter().enumerate() {
            let index: u64 = row[0]
                .parse()
                .unwrap_or_else(|e| panic!("{marker}: bad index {:?}: {e}", row[0]));
            assert_eq!(
                index, expected as u64,
                "{marker}: indexes must be 0, 1, 2, …"
            );
            table.insert(row[1].trim_matches('`').to_string(), index);
        }
        let examples: Vec<&Example> = report
            .examples
            .iter()
            .filter(|e| matches!(e.frame, Frame::Client(_)) == is_client)
            .collect();
        for example in &examples {
            let Some(&index) = table.get(&example.tag) else {
                panic!(
                    "line {}: `{}` is missing from the {marker} table",
                    example.line, example.tag
                );
            };
            assert_eq!(
                variant_index(&example.frame),
                index,
                "line {}: postcard index of `{}`",
                example.line,
                example.tag
            );
        }
        for tag in table.keys() {
            assert!(
                examples.iter().any(|e| &e.tag == tag),
                "`{tag}` ({marker}) has no JSON example"
            );
        }
    }
}

#[test]
fn every_error_code_has_a_row_with_its_wire_string_and_postcard_index() {
    let doc = doc();
    for code in ErrorCode::ALL {
        let wire = code.as_str();
        assert!(
            doc.contains(&format!("`{wire}`")),
            "`{wire}` is not documented"
        );
        let bytes = postcard::to_allocvec(code).expect("error codes serialize");
        let index = read_varint(&bytes, &mut 0);
        let row = format!("| `{wire}` | {index} |");
        assert!(
            doc.lines().any(|l| l.starts_with(&row)),
            "the error table needs a row starting with {row:?}"
        );
    }
}

#[test]
fn every_close_reason_is_documented() {
    let doc = doc();
    for reason in [
        CloseReason::SlowConsumer,
        CloseReason::PolicyViolation,
        CloseReason::Revoked,
        CloseReason::Shutdown,
    ] {
        let row = format!("| `{}` |", reason.as_str());
        assert!(
            doc.lines().any(|l| l.starts_with(&row)),
            "the close reason table needs a row starting with {row:?}"
        );
    }
}

/// `Limits`' fields and default values, as its `Debug` output names them.
fn limits_fields() -> Vec<(String, String)> {
    let debug = format!("{:?}", Limits::default());
    let inner = debug
        .strip_prefix("Limits { ")
        .and_then(|s| s.strip_suffix(" }"))
        .unwrap_or_else(|| panic!("unexpected Debug output: {debug}"));
    inner
        .split(", ")
        .map(|field| {
            let (name, value) = field
                .split_once(": ")
                .unwrap_or_else(|| panic!("unexpected field {field:?}"));
            (name.to_string(), value.to_string())
        })
        .collect()
}

/// A `Duration`'s `Debug` output (`250ms`, `604800s`) in seconds.
fn debug_duration_secs(value: &str) -> Option<f64> {
    if let Some(ms) = value.strip_suffix("ms") {
        return ms.parse::<f64>().ok().map(|v| v / 1000.0);
    }
    value.strip_suffix('s')?.parse().ok()
}

/// Whether a documented default (`16384 (16 KiB)`, `250 ms`, `7 days`, `false`) states
/// `value` (a `Debug` rendering).
fn states_default(cell: &str, value: &str) -> bool {
    let mut words = cell.split_whitespace();
    let Some(first) = words.next() else {
        return false;
    };
    if let Ok(expected) = value.parse::<f64>() {
        return first.parse::<f64>() == Ok(expected);
    }
    if let Some(secs) = debug_duration_secs(value) {
        let unit = match words.next() {
            Some("ms") => 0.001,
            Some("s") => 1.0,
            Some("minutes") => 60.0,
            Some("hours") => 3600.0,
            Some("days") => 86400.0,
            _ => return false,
        };
        return first
            .parse::<f64>()
            .is_ok_and(|n| (n * unit - secs).abs() < 1e-9);
    }
    first == value
}

#[test]
fn every_limit_is_documented_with_its_default() {
    let doc = doc();
    for (name, value) in limits_fields() {
        let prefix = format!("| `{name}` |");
        let row = doc
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("the limits table needs a row starting with {prefix:?}"));
        let default = row
            .trim_matches('|')
            .split('|')
            .nth(1)
            .unwrap_or_default()
            .trim();
        assert!(
            states_default(default, &value),
            "`{name}`: the table says {default:?}, the code's default is {value}"
        );
    }
}
