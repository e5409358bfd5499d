//! Splits the token stream into messages and enforces QEMU's limits, in
//! the way of the QEMU release being spoken for ([`Dialect`]).
//!
//! QEMU 10 and older collect tokens until braces and brackets balance, or
//! either count goes negative (a stray `]` is a message of its own); then
//! the collected tokens are parsed. Any error (lexical, a limit, or the
//! parser's) drops what was collected and starts afresh, which is how one
//! bad request can cost several error replies, and how a 0x01 or 0xFF byte
//! resets a half-read message at the cost of exactly one.
//!
//! QEMU 11 hands each token to the parser as it comes (`push.rs`). After
//! an error it skips the rest of the value until its brackets balance, so
//! a bad request costs one error reply; a lexical error, a stray closing
//! bracket, or a reset byte still ends the value at once. Its parse errors
//! start with the token's `LINE:COLUMN: `; the limit errors do not.

use super::lexer::{LexEvent, Lexer, Position, Token, TokenKind, MAX_TOKEN_SIZE};
use super::parser::parse;
use super::push::{self, PushParser};
use super::utf8::lossy;
use super::QObject;

/// Limit on the tokens of one message.
pub const MAX_TOKEN_COUNT: usize = 2 << 20;
/// Limit on open braces plus brackets.
pub const MAX_NESTING: i64 = 1 << 10;

/// One result of reading: a complete value, or an error text (already
/// prefixed, as in `JSON parse error, stray '@'`). Errors carry no id: QEMU
/// could not read one.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A complete value.
    Value(QObject),
    /// The error reply's text.
    Error(String),
}

/// Which QEMU release's JSON reader to behave like. Values read the same
/// in all; errors, their texts and how many a bad message costs differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// QEMU up to 10.x: whole messages are collected, then parsed; errors
    /// have no location (checked against 7.2 and 10.0).
    #[default]
    Collecting,
    /// QEMU 11: tokens are parsed as they arrive; parse errors start with
    /// `LINE:COLUMN: ` (checked against 11.1).
    Pushing,
}

impl Dialect {
    /// The dialect of a QEMU version.
    pub fn of_qemu(major: u64, _minor: u64) -> Dialect {
        if major >= 11 {
            Dialect::Pushing
        } else {
            Dialect::Collecting
        }
    }
}

/// QEMU's JSON input side for one connection.
pub struct Streamer {
    lexer: Lexer,
    split: Split,
}

enum Split {
    Collect(Collect),
    Push(Push),
}

impl Default for Streamer {
    fn default() -> Self {
        Self::new()
    }
}

impl Streamer {
    /// A reader in the [`Dialect::Collecting`] way of QEMU 10 and older.
    pub fn new() -> Self {
        Self::with_dialect(Dialect::Collecting)
    }

    /// A reader in the given dialect.
    ///
    /// ```
    /// use qmp_proto::qemu_json::{Dialect, Parsed, Streamer};
    ///
    /// let bad = b"{\"execute\" \"query-version\"}\n";
    /// let mut qemu10 = Streamer::with_dialect(Dialect::of_qemu(10, 0));
    /// assert_eq!(
    ///     qemu10.feed_collect(bad),
    ///     [Parsed::Error("JSON parse error, missing : in object pair".into())]
    /// );
    /// let mut qemu11 = Streamer::with_dialect(Dialect::of_qemu(11, 1));
    /// assert_eq!(
    ///     qemu11.feed_collect(bad),
    ///     [Parsed::Error("1:12: JSON parse error, expecting ':'".into())]
    /// );
    /// ```
    pub fn with_dialect(dialect: Dialect) -> Self {
        Streamer {
            lexer: Lexer::new(),
            split: match dialect {
                Dialect::Collecting => Split::Collect(Collect::default()),
                Dialect::Pushing => Split::Push(Push::default()),
            },
        }
    }

    /// Feeds bytes; `emit` is called for each message or error completed.
    pub fn feed(&mut self, bytes: &[u8], emit: impl FnMut(Parsed)) {
        self.feed_inner(bytes, emit, false);
    }

    /// Feeds bytes up to and including the first byte that completes
    /// something (a message or an error, reported to `emit`), and returns
    /// how many it took: a reader that must stop as soon as its queue is
    /// full, as QEMU's monitor does, feeds with this.
    pub fn feed_some(&mut self, bytes: &[u8], emit: impl FnMut(Parsed)) -> usize {
        self.feed_inner(bytes, emit, true)
    }

    fn feed_inner(&mut self, bytes: &[u8], mut emit: impl FnMut(Parsed), stop: bool) -> usize {
        let Streamer { lexer, split } = self;
        let emitted = std::cell::Cell::new(false);
        lexer.feed_all(
            bytes,
            &mut |event| {
                let done = match split {
                    Split::Collect(c) => c.process(event),
                    Split::Push(p) => p.process(event),
                };
                if let Some(p) = done {
                    emitted.set(true);
                    emit(p);
                }
            },
            || stop && emitted.get(),
        )
    }

    /// [`feed`](Self::feed), collecting the results.
    pub fn feed_collect(&mut self, bytes: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        self.feed(bytes, |p| out.push(p));
        out
    }

    /// About how much memory the message being read holds, in bytes: the
    /// token being lexed, and the tokens (QEMU 10) or the value (QEMU 11)
    /// so far. QEMU's own limits allow a message of 64 MiB of tokens and
    /// 2 Mi tokens, which can hold a few hundred MiB; a server that must
    /// bound each client's memory by less checks this as input arrives.
    /// Constant time: it is estimated from counts, not measured.
    pub fn held_bytes(&self) -> usize {
        /// What an allocation costs beyond its bytes, about (malloc's
        /// smallest chunk).
        const ALLOCATION: usize = 32;
        self.lexer.held()
            + match &self.split {
                Split::Collect(c) => {
                    c.tokens.capacity() * std::mem::size_of::<Token>()
                        + c.counts.size
                        + c.counts.tokens * ALLOCATION
                }
                Split::Push(p) if p.skipping => 0,
                // a node per token, in containers that grow by doubling
                Split::Push(p) => {
                    p.counts.size + p.counts.tokens * 2 * std::mem::size_of::<QObject>()
                }
            }
    }

    /// Whether part of a message has been read (a token started or
    /// collected). Used to tell whether input ended cleanly.
    pub fn is_idle(&self) -> bool {
        match &self.split {
            Split::Collect(c) => c.tokens.is_empty(),
            Split::Push(p) => p.counts.tokens == 0,
        }
    }
}

/// Per-message counts that the limits apply to.
#[derive(Default)]
struct Counts {
    braces: i64,
    brackets: i64,
    tokens: usize,
    size: usize,
}

impl Counts {
    /// The limit a message has gone past, if any, counting `len` more bytes.
    fn limit_error(&self, len: usize) -> Option<&'static str> {
        if self.size + len + 1 > MAX_TOKEN_SIZE {
            Some("JSON token size limit exceeded")
        } else if self.tokens + 1 > MAX_TOKEN_COUNT {
            Some("JSON token count limit exceeded")
        } else if self.braces + self.brackets > MAX_NESTING {
            Some("JSON nesting depth limit exceeded")
        } else {
            None
        }
    }

    fn count_bracket(&mut self, kind: TokenKind) {
        match kind {
            TokenKind::LCurly => self.braces += 1,
            TokenKind::RCurly => self.braces -= 1,
            TokenKind::LSquare => self.brackets += 1,
            TokenKind::RSquare => self.brackets -= 1,
            _ => {}
        }
    }
}

/// QEMU 10 and older: collect, then parse.
#[derive(Default)]
struct Collect {
    tokens: Vec<Token>,
    counts: Counts,
}

impl Collect {
    fn process(&mut self, event: LexEvent<'_>) -> Option<Parsed> {
        let (kind, text) = match event {
            LexEvent::Error(text, _) => {
                return Some(self.fail(format!("JSON parse error, stray '{}'", lossy(text))));
            }
            LexEvent::Oversize => return Some(self.fail("JSON token size limit exceeded".into())),
            LexEvent::Token(kind, text, _) => (kind, text),
        };
        self.counts.count_bracket(kind);
        if let Some(limit) = self.counts.limit_error(text.len()) {
            return Some(self.fail(limit.into()));
        }
        self.counts.size += text.len();
        self.counts.tokens += 1;
        // a long string's bytes move here rather than being copied
        let text = if text.len() > 4096 {
            std::mem::take(text)
        } else {
            text.clone()
        };
        self.tokens.push(Token { kind, text });
        let Counts {
            braces, brackets, ..
        } = self.counts;
        let open = braces > 0 || brackets > 0;
        if open && braces >= 0 && brackets >= 0 {
            return None;
        }
        let result = match parse(&mut self.tokens) {
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
        self.counts = Counts::default();
    }
}

/// QEMU 11: parse as tokens come; after an error, skip to the balance.
#[derive(Default)]
struct Push {
    parser: PushParser,
    counts: Counts,
    /// An error was reported for the value being read: skip the rest.
    skipping: bool,
}

impl Push {
    fn process(&mut self, event: LexEvent<'_>) -> Option<Parsed> {
        let mut error_text = Vec::new();
        let (kind, text, at): (Option<TokenKind>, &mut Vec<u8>, Position) = match event {
            LexEvent::Token(kind, text, at) => (Some(kind), text, at),
            LexEvent::Error(text, at) => {
                error_text.extend_from_slice(text);
                (None, &mut error_text, at)
            }
            LexEvent::Oversize => {
                self.end_value();
                return Some(Parsed::Error("JSON token size limit exceeded".into()));
            }
        };
        // (the parser may take the text: a long string is moved, not copied)
        let len = text.len();
        // A closing bracket with nothing open, or a lexical error, ends the
        // value: the counts start again from zero.
        let counts = &mut self.counts;
        let unbalanced = match kind {
            Some(TokenKind::RCurly) => counts.braces == 0,
            Some(TokenKind::RSquare) => counts.brackets == 0,
            None => true,
            _ => false,
        };
        if unbalanced {
            counts.braces = 0;
            counts.brackets = 0;
        } else if let Some(kind) = kind {
            counts.count_bracket(kind);
        }
        let mut out = None;
        if !self.skipping {
            let result = match (counts.limit_error(len), kind) {
                (Some(limit), _) => Err(limit.to_string()),
                (None, None) => Err(push::error(at, format_args!("stray '{}'", lossy(text)))),
                (None, Some(kind)) => self.parser.feed(kind, text, at),
            };
            match result {
                Ok(value) => out = value.map(Parsed::Value),
                Err(e) => {
                    out = Some(Parsed::Error(e));
                    self.skipping = true;
                }
            }
        }
        let counts = &mut self.counts;
        counts.size += len;
        counts.tokens += 1;
        if counts.braces == 0 && counts.brackets == 0 {
            self.end_value();
        }
        out
    }

    fn end_value(&mut self) {
        self.parser.reset();
        self.counts = Counts::default();
        self.skipping = false;
    }
}

impl std::fmt::Debug for Streamer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dialect = match self.split {
            Split::Collect(_) => Dialect::Collecting,
            Split::Push(_) => Dialect::Pushing,
        };
        f.debug_struct("Streamer")
            .field("dialect", &dialect)
            .field("held_bytes", &self.held_bytes())
            .finish_non_exhaustive()
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
