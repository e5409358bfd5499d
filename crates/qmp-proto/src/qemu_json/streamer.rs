//! Splits the token stream into messages and enforces QEMU's limits.
//!
//! Tokens are collected until braces and brackets balance, or either count
//! goes negative (a stray `]` is a message of its own); then the collected
//! tokens are parsed. Any error (lexical, a limit, or the parser's) drops
//! what was collected and starts afresh, which is how one bad request can
//! cost several error replies, and how a 0x01 or 0xFF byte resets a
//! half-read message at the cost of exactly one.

use super::lexer::{LexEvent, Lexer, TokenKind};
use super::parser::parse;
use super::utf8::lossy;
use super::QObject;

/// Limit on the bytes of all tokens of one message, and of one token.
pub const MAX_TOKEN_SIZE: usize = 64 << 20;
/// Limit on the tokens of one message.
pub const MAX_TOKEN_COUNT: usize = 2 << 20;
/// Limit on open braces plus brackets.
pub const MAX_NESTING: i64 = 1 << 10;

/// One result of reading: a complete value, or an error text (already
/// prefixed, as in `JSON parse error, stray '@'`). Errors carry no id: QEMU
/// could not read one.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Value(QObject),
    Error(String),
}

pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) text: Vec<u8>,
}

/// QEMU's JSON input side for one connection.
pub struct Streamer {
    lexer: Lexer,
    tokens: Vec<Token>,
    braces: i64,
    brackets: i64,
    size: usize,
}

impl Default for Streamer {
    fn default() -> Self {
        Self::new()
    }
}

impl Streamer {
    pub fn new() -> Self {
        Streamer {
            lexer: Lexer::new(),
            tokens: Vec::new(),
            braces: 0,
            brackets: 0,
            size: 0,
        }
    }

    /// Feeds bytes; `emit` is called for each message or error completed.
    pub fn feed(&mut self, bytes: &[u8], mut emit: impl FnMut(Parsed)) {
        let Streamer {
            lexer,
            tokens,
            braces,
            brackets,
            size,
        } = self;
        let mut state = Collect {
            tokens,
            braces,
            brackets,
            size,
        };
        for &b in bytes {
            lexer.feed(b, &mut |event| {
                if let Some(p) = state.process(event) {
                    emit(p);
                }
            });
        }
    }

    /// [`feed`](Self::feed), collecting the results.
    pub fn feed_collect(&mut self, bytes: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        self.feed(bytes, |p| out.push(p));
        out
    }

    /// Whether part of a message has been read (a token started or
    /// collected). Used to tell whether input ended cleanly.
    pub fn is_idle(&self) -> bool {
        self.tokens.is_empty()
    }
}

struct Collect<'a> {
    tokens: &'a mut Vec<Token>,
    braces: &'a mut i64,
    brackets: &'a mut i64,
    size: &'a mut usize,
}

impl Collect<'_> {
    fn process(&mut self, event: LexEvent<'_>) -> Option<Parsed> {
        let (kind, text) = match event {
            LexEvent::Error(text) => {
                return Some(self.fail(format!("JSON parse error, stray '{}'", lossy(text))));
            }
            LexEvent::Oversize => return Some(self.fail("JSON token size limit exceeded".into())),
            LexEvent::Token(kind, text) => (kind, text),
        };
        match kind {
            TokenKind::LCurly => *self.braces += 1,
            TokenKind::RCurly => *self.braces -= 1,
            TokenKind::LSquare => *self.brackets += 1,
            TokenKind::RSquare => *self.brackets -= 1,
            _ => {}
        }
        if *self.size + text.len() + 1 > MAX_TOKEN_SIZE {
            return Some(self.fail("JSON token size limit exceeded".into()));
        }
        if self.tokens.len() + 1 > MAX_TOKEN_COUNT {
            return Some(self.fail("JSON token count limit exceeded".into()));
        }
        if *self.braces + *self.brackets > MAX_NESTING {
            return Some(self.fail("JSON nesting depth limit exceeded".into()));
        }
        *self.size += text.len();
        self.tokens.push(Token {
            kind,
            text: text.to_vec(),
        });
        let open = *self.braces > 0 || *self.brackets > 0;
        if open && *self.braces >= 0 && *self.brackets >= 0 {
            return None;
        }
        let result = match parse(self.tokens) {
            Ok(v) => Parsed::Value(v),
            Err(e) => Parsed::Error(format!("JSON parse error, {e}")),
        };
        self.reset();
        Some(result)
    }

    fn fail(&mut self, text: String) -> Parsed {
        self.reset();
        Parsed::Error(text)
    }

    fn reset(&mut self) {
        self.tokens.clear();
        *self.braces = 0;
        *self.brackets = 0;
        *self.size = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(p: &[Parsed]) -> Vec<&str> {
        p.iter()
            .map(|p| match p {
                Parsed::Error(e) => e.as_str(),
                Parsed::Value(_) => "(value)",
            })
            .collect()
    }

    #[test]
    fn a_top_level_scalar_needs_the_next_byte() {
        let mut s = Streamer::new();
        assert!(s.feed_collect(b"42").is_empty());
        assert_eq!(s.feed_collect(b"\n"), [Parsed::Value(QObject::Int(42))]);
        assert!(s.feed_collect(b"tru").is_empty());
        assert_eq!(errors(&s.feed_collect(b"e ")), ["(value)"]);
    }

    #[test]
    fn a_reset_byte_costs_one_error_then_input_is_read_afresh() {
        let mut s = Streamer::new();
        let out = s.feed_collect(b"{\"execute\": \"x\", \"arguments\": {\"a\": [1,\x01{\"id\": 1}");
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0],
            Parsed::Error("JSON parse error, stray '\u{1}'".into())
        );
        assert!(
            matches!(&out[1], Parsed::Value(QObject::Dict(d)) if d.get("id") == Some(&QObject::Int(1)))
        );
    }

    #[test]
    fn nesting_limit() {
        let mut s = Streamer::new();
        let mut ok = vec![b'['; MAX_NESTING as usize];
        ok.extend(vec![b']'; MAX_NESTING as usize]);
        assert_eq!(errors(&s.feed_collect(&ok)), ["(value)"]);
        let deep = vec![b'['; MAX_NESTING as usize + 1];
        assert_eq!(
            errors(&s.feed_collect(&deep)),
            ["JSON nesting depth limit exceeded"]
        );
        // afterwards the reader starts afresh
        assert_eq!(errors(&s.feed_collect(b"{}")), ["(value)"]);
    }

    #[test]
    fn token_count_limit() {
        let mut s = Streamer::new();
        // "[" and then "1," pairs: 2,097,153 tokens, one too many, so the
        // last comma trips the limit
        let mut input = b"[".to_vec();
        for _ in 0..MAX_TOKEN_COUNT / 2 {
            input.extend_from_slice(b"1,");
        }
        let out = s.feed_collect(&input);
        assert_eq!(errors(&out), ["JSON token count limit exceeded"]);
        // one token fewer is a message still being read, not an error
        let mut s = Streamer::new();
        assert!(s.feed_collect(&input[..input.len() - 1]).is_empty());
        // and after the error, input is read afresh
        let mut s2 = Streamer::new();
        s2.feed_collect(&input);
        assert_eq!(errors(&s2.feed_collect(b"{}")), ["(value)"]);
    }

    #[test]
    fn token_size_limit_for_one_token_and_for_a_message() {
        let mut s = Streamer::new();
        let mut input = b"\"".to_vec();
        input.extend(vec![b'a'; MAX_TOKEN_SIZE + 1]);
        let out = s.feed_collect(&input);
        assert_eq!(errors(&out), ["JSON token size limit exceeded"]);
        // many tokens that add up past the limit
        let mut s = Streamer::new();
        let chunk = format!("\"{}\",", "b".repeat((1 << 20) - 3));
        let mut input = b"[".to_vec();
        for _ in 0..64 {
            input.extend_from_slice(chunk.as_bytes());
        }
        let out = s.feed_collect(&input);
        assert_eq!(errors(&out)[0], "JSON token size limit exceeded");
    }
}
