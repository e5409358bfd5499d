//! QEMU's JSON output.
//!
//! * `", "` between members and items, `": "` after keys (rule S1); with
//!   `pretty`, a newline and four spaces per level instead.
//! * Pure ASCII (S2): `\" \\ \b \f \n \r \t` by name, other bytes below
//!   0x20 and everything from 0x7F up as `\uXXXX` with upper-case hex,
//!   astral characters as surrogate pairs; `/` is not escaped.
//! * Doubles as C's `%.17g` (`0.1` is `0.10000000000000001`, `1e400` is
//!   `inf`).
//! * Object members in the order QEMU's hash table iterates them: by bucket
//!   (a hash of the key modulo 512), the newest first within a bucket. That
//!   order is what makes QEMU's replies read `{"return": .., "id": ..}` and
//!   `{"micro", "minor", "major"}` (S3), and it reorders any object a client
//!   sends that QEMU echoes back, such as an id. Members sharing a bucket
//!   come out newest first, so the insertion order can show: build objects
//!   in the order QEMU's code inserts their members (QAPI declaration
//!   order, as `query-qmp-schema` lists them), as `major`, `minor`,
//!   `micro` for a version.

use super::{QDict, QObject};
use std::fmt::Write;

/// Number of buckets of QEMU's dictionaries.
const BUCKETS: u32 = 512;

/// QEMU's string hash for dictionary keys. Keys are hashed as QEMU stores
/// them, in modified UTF-8, where U+0000 is the two bytes C0 80.
fn key_hash(key: &str) -> u32 {
    let mut bytes = Vec::with_capacity(key.len());
    for c in key.chars() {
        if c == '\0' {
            bytes.extend_from_slice(&[0xC0, 0x80]);
        } else {
            let mut buf = [0; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    let mut value = 0x238F_13AFu32.wrapping_mul(bytes.len() as u32);
    for (i, &b) in bytes.iter().enumerate() {
        value = value.wrapping_add((b as u32) << (i * 5 % 24));
    }
    1_103_515_243u32.wrapping_mul(value).wrapping_add(12345)
}

/// Members in QEMU's iteration order.
pub(crate) fn output_order(dict: &QDict) -> Vec<(&str, &QObject)> {
    let mut members: Vec<(usize, &str, &QObject)> = dict
        .iter()
        .enumerate()
        .map(|(i, (k, v))| (i, k, v))
        .collect();
    members.sort_by_key(|&(i, k, _)| (key_hash(k) % BUCKETS, std::cmp::Reverse(i)));
    members.into_iter().map(|(_, k, v)| (k, v)).collect()
}

/// The JSON text QEMU would write for `value` (without the line ending).
pub fn to_json(value: &QObject, pretty: bool) -> String {
    let mut out = String::new();
    write_value(&mut out, value, pretty, 0);
    out
}

/// A whole line as QEMU's monitor sends it: newlines become `\r\n`, and one
/// ends the message.
pub fn to_line(value: &QObject, pretty: bool) -> Vec<u8> {
    let mut text = to_json(value, pretty);
    if pretty {
        text = text.replace('\n', "\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

fn newline(out: &mut String, pretty: bool, indent: usize) {
    if pretty {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', indent * 4));
    }
}

fn write_value(out: &mut String, value: &QObject, pretty: bool, indent: usize) {
    let separator = if pretty { "," } else { ", " };
    match value {
        QObject::Null => out.push_str("null"),
        QObject::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        QObject::Int(i) => {
            let _ = write!(out, "{i}");
        }
        QObject::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        QObject::Double(d) => out.push_str(&format_double(*d)),
        QObject::String(s) => write_string(out, s),
        QObject::List(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push_str(separator);
                }
                newline(out, pretty, indent + 1);
                write_value(out, item, pretty, indent + 1);
            }
            newline(out, pretty, indent);
            out.push(']');
        }
        QObject::Dict(dict) => {
            out.push('{');
            for (n, (key, item)) in output_order(dict).into_iter().enumerate() {
                if n > 0 {
                    out.push_str(separator);
                }
                newline(out, pretty, indent + 1);
                write_string(out, key);
                out.push_str(": ");
                write_value(out, item, pretty, indent + 1);
            }
            newline(out, pretty, indent);
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04X}");
                }
            }
        }
    }
    out.push('"');
}

/// C's `printf("%.17g", d)`, as glibc prints it.
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        return if d.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if d.is_infinite() {
        return if d < 0.0 { "-inf" } else { "inf" }.into();
    }
    const PRECISION: i32 = 17;
    // 17 significant digits, correctly rounded: d.ddddddddddddddddde±X
    let sci = format!("{:.*e}", (PRECISION - 1) as usize, d);
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if !(-4..PRECISION).contains(&exponent) {
        out.push_str(&digits[..1]);
        let fraction = digits[1..].trim_end_matches('0');
        if !fraction.is_empty() {
            out.push('.');
            out.push_str(fraction);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exponent < 0 { '-' } else { '+' },
            exponent.abs()
        );
    } else if exponent >= 0 {
        let point = exponent as usize + 1;
        out.push_str(&digits[..point]);
        let fraction = digits[point..].trim_end_matches('0');
        if !fraction.is_empty() {
            out.push('.');
            out.push_str(fraction);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
        out.push_str(digits.trim_end_matches('0'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(keys: &[&str]) -> QObject {
        QObject::Dict(
            keys.iter()
                .map(|k| (k.to_string(), QObject::Null))
                .collect(),
        )
    }

    fn keys_out(keys: &[&str]) -> Vec<String> {
        let QObject::Dict(d) = dict(keys) else {
            unreachable!()
        };
        output_order(&d)
            .into_iter()
            .map(|(k, _)| k.to_owned())
            .collect()
    }

    #[test]
    fn member_order_of_qemus_fixed_shapes() {
        // rule S3, whatever order the members were inserted in
        assert_eq!(keys_out(&["id", "return"]), ["return", "id"]);
        assert_eq!(keys_out(&["error", "id"]), ["id", "error"]);
        assert_eq!(keys_out(&["desc", "class"]), ["class", "desc"]);
        assert_eq!(
            keys_out(&["event", "data", "timestamp"]),
            ["timestamp", "event", "data"]
        );
        assert_eq!(
            keys_out(&["microseconds", "seconds"]),
            ["seconds", "microseconds"]
        );
        assert_eq!(
            keys_out(&["capabilities", "version"]),
            ["version", "capabilities"]
        );
        assert_eq!(keys_out(&["package", "qemu"]), ["qemu", "package"]);
        assert_eq!(
            keys_out(&["major", "minor", "micro"]),
            ["micro", "minor", "major"]
        );
        // an echoed id, as qemu-storage-daemon printed it
        assert_eq!(
            keys_out(&["b", "a", "c", "return", "id", "error", "zz"]),
            ["a", "zz", "b", "return", "c", "id", "error"]
        );
    }

    #[test]
    fn doubles_as_percent_17g() {
        for (d, s) in [
            (1.0, "1"),
            (0.1, "0.10000000000000001"),
            (1e300, "1.0000000000000001e+300"),
            (1.2345678901234568e29, "1.2345678901234568e+29"),
            (-(2f64.powi(63)), "-9.2233720368547758e+18"),
            (100000.0, "100000"),
            (2.5e-7, "2.4999999999999999e-07"),
            (0.5, "0.5"),
            (0.0001, "0.0001"),
            (0.00001, "1.0000000000000001e-05"),
            (-0.0, "-0"),
            (0.0, "0"),
            (1e16, "10000000000000000"),
            (1e17, "1e+17"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(format_double(d), s, "{d:e}");
        }
    }

    #[test]
    fn strings_are_ascii_with_upper_case_escapes() {
        let s = QObject::String("\0\u{7f}é😀/\"\\\u{8}\u{c}\n\r\t\u{1}".into());
        assert_eq!(
            to_json(&s, false),
            r#""\u0000\u007F\u00E9\uD83D\uDE00/\"\\\b\f\n\r\t\u0001""#
        );
    }

    #[test]
    fn pretty_layout() {
        let v = QObject::Dict(
            [
                ("a".to_string(), QObject::Dict(QDict::new())),
                ("b".to_string(), QObject::List(vec![])),
                (
                    "c".to_string(),
                    QObject::List(vec![QObject::Int(1), QObject::Null]),
                ),
            ]
            .into_iter()
            .collect(),
        );
        assert_eq!(to_json(&v, false), r#"{"a": {}, "b": [], "c": [1, null]}"#);
        assert_eq!(
            to_json(&v, true),
            "{\n    \"a\": {\n    },\n    \"b\": [\n    ],\n    \"c\": [\n        1,\n        null\n    ]\n}"
        );
    }
}
