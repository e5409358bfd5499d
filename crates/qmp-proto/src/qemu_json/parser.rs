//! QEMU's JSON parser: a token list (one message) to a value, or the first
//! error's text. The texts, and which error wins, are QEMU's.

use super::lexer::{Token, TokenKind};
use super::utf8::{self, lossy};
use super::{QDict, QObject};

type Result<T> = std::result::Result<T, String>;

/// The tokens of one message, read front to back. A literal's text is
/// taken out (moved, not copied) when its value is built.
struct Tokens<'a> {
    list: &'a mut [Token],
    next: usize,
}

impl Tokens<'_> {
    fn peek(&self) -> Option<TokenKind> {
        self.list.get(self.next).map(|t| t.kind)
    }

    fn pop(&mut self) -> Option<TokenKind> {
        let t = self.peek();
        self.next += 1;
        t
    }

    fn pop_or_eoi(&mut self) -> Result<TokenKind> {
        self.pop().ok_or_else(premature_eoi)
    }

    /// The value of the literal token at the front, which is consumed.
    fn pop_literal(&mut self) -> Result<QObject> {
        let token = &mut self.list[self.next];
        self.next += 1;
        literal(token.kind, &mut token.text)
    }
}

fn premature_eoi() -> String {
    "premature EOI".into()
}

/// Parses one message's tokens.
pub(crate) fn parse(tokens: &mut [Token]) -> Result<QObject> {
    parse_value(&mut Tokens {
        list: tokens,
        next: 0,
    })
}

fn parse_value(t: &mut Tokens<'_>) -> Result<QObject> {
    match t.peek().ok_or_else(premature_eoi)? {
        TokenKind::LCurly => parse_object(t),
        TokenKind::LSquare => parse_array(t),
        TokenKind::Integer | TokenKind::Float | TokenKind::String | TokenKind::Keyword => {
            t.pop_literal()
        }
        _ => Err("expecting value".into()),
    }
}

fn parse_object(t: &mut Tokens<'_>) -> Result<QObject> {
    t.pop(); // the '{'
    let mut dict = QDict::new();
    if t.peek().ok_or_else(premature_eoi)? == TokenKind::RCurly {
        t.pop();
        return Ok(QObject::Dict(dict));
    }
    parse_pair(t, &mut dict)?;
    loop {
        let token = t.pop_or_eoi()?;
        match token {
            TokenKind::RCurly => return Ok(QObject::Dict(dict)),
            TokenKind::Comma => parse_pair(t, &mut dict)?,
            _ => return Err("expected separator in dict".into()),
        }
    }
}

fn parse_pair(t: &mut Tokens<'_>, dict: &mut QDict) -> Result<()> {
    t.peek().ok_or_else(premature_eoi)?;
    let QObject::String(key) = parse_value(t)? else {
        return Err("key is not a string in object".into());
    };
    if t.pop_or_eoi()? != TokenKind::Colon {
        return Err("missing : in object pair".into());
    }
    let value = parse_value(t)?;
    if dict.contains_key(&key) {
        return Err("duplicate key".into());
    }
    dict.insert(key, value);
    Ok(())
}

fn parse_array(t: &mut Tokens<'_>) -> Result<QObject> {
    t.pop(); // the '['
    let mut list = Vec::new();
    if t.peek().ok_or_else(premature_eoi)? == TokenKind::RSquare {
        t.pop();
        return Ok(QObject::List(list));
    }
    list.push(parse_value(t)?);
    loop {
        let token = t.pop_or_eoi()?;
        match token {
            TokenKind::RSquare => return Ok(QObject::List(list)),
            TokenKind::Comma => list.push(parse_value(t)?),
            _ => return Err("expected separator in list".into()),
        }
    }
}

/// A string, number or keyword token's value. A string may take the
/// token's bytes ([`take_string`]).
pub(crate) fn literal(kind: TokenKind, token: &mut Vec<u8>) -> Result<QObject> {
    if kind == TokenKind::String {
        return take_string(token).map(QObject::String);
    }
    // Token texts of numbers and keywords are ASCII by construction.
    let text = std::str::from_utf8(token).unwrap_or_default();
    match kind {
        TokenKind::Keyword => match text {
            "true" => Ok(QObject::Bool(true)),
            "false" => Ok(QObject::Bool(false)),
            "null" => Ok(QObject::Null),
            _ => Err(format!("invalid keyword '{text}'")),
        },
        TokenKind::Integer => {
            if let Ok(i) = text.parse::<i64>() {
                Ok(QObject::Int(i))
            } else if let (false, Ok(u)) = (text.starts_with('-'), text.parse::<u64>()) {
                Ok(QObject::UInt(u))
            } else {
                Ok(QObject::Double(text.parse().unwrap_or(f64::NAN)))
            }
        }
        _ => Ok(QObject::Double(text.parse().unwrap_or(f64::NAN))),
    }
}

/// A string token's value. When it is plain ASCII without escapes (a long
/// string argument, typically), the token's own bytes become the string.
pub(crate) fn take_string(token: &mut Vec<u8>) -> Result<String> {
    let body = &token[1..token.len() - 1];
    if body.is_ascii() && !body.contains(&b'\\') {
        let mut bytes = std::mem::take(token);
        bytes.pop();
        bytes.remove(0);
        return String::from_utf8(bytes).map_err(|_| "invalid UTF-8 sequence in string".into());
    }
    parse_string(token)
}

/// Four hex digits at `at`, as a number; bytes past the end read as NUL.
fn hex4(s: &[u8], at: usize) -> Option<u32> {
    let mut cp = 0;
    for i in at..at + 4 {
        let d = (*s.get(i)? as char).to_digit(16)?;
        cp = cp << 4 | d;
    }
    Some(cp)
}

/// Decodes a string token, quotes included.
fn parse_string(s: &[u8]) -> Result<String> {
    let quote = s[0];
    let mut out = String::new();
    let mut i = 1;
    while i < s.len() && s[i] != quote {
        // a run of plain ASCII at once
        let run = s[i..]
            .iter()
            .take_while(|&&c| c < 0x80 && c != quote && c != b'\\')
            .count();
        if run > 0 {
            out.push_str(std::str::from_utf8(&s[i..i + run]).unwrap_or_default());
            i += run;
            continue;
        }
        if s[i] != b'\\' {
            let (cp, used) = utf8::decode(&s[i..]);
            let c = cp
                .and_then(char::from_u32)
                .ok_or_else(|| "invalid UTF-8 sequence in string".to_string())?;
            out.push(c);
            i += used;
            continue;
        }
        let begin = i;
        let escape = s.get(i + 1).copied().unwrap_or(0);
        i += 2;
        let c = match escape {
            b'"' => '"',
            b'\'' => '\'',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let mut cp = hex4(s, i);
                i += 4;
                if let Some(lead @ 0xD800..=0xDBFF) = cp {
                    if s.get(i) == Some(&b'\\') && s.get(i + 1) == Some(&b'u') {
                        cp = match hex4(s, i + 2) {
                            Some(trail @ 0xDC00..=0xDFFF) => {
                                i += 6;
                                Some(0x10000 + ((lead & 0x3FF) << 10) + (trail & 0x3FF))
                            }
                            _ => None,
                        };
                    }
                }
                match cp
                    .filter(|&c| utf8::is_valid_codepoint(c))
                    .and_then(char::from_u32)
                {
                    Some(c) => c,
                    None => {
                        let shown = &s[begin..i.min(s.len())];
                        return Err(format!("{} is not a valid Unicode character", lossy(shown)));
                    }
                }
            }
            _ => return Err("invalid escape sequence in string".into()),
        };
        out.push(c);
    }
    Ok(out)
}
