//! QEMU's JSON lexer: a byte-at-a-time state machine.
//!
//! Its quirks are the point, so they are spelled out:
//! * strings may be single-quoted; after a backslash any printable byte is
//!   accepted here (the parser rejects bad escapes later);
//! * control bytes, 0xFE and 0xFF are never part of a token;
//! * a number or keyword ends only when the next byte arrives (lookahead),
//!   which is why a lone `42` gets no answer until something follows it;
//! * after an error the lexer skips to the next structural byte (`[]{}:,`),
//!   a control byte other than tab, or 0xFE/0xFF, and starts over there;
//! * a token longer than 64 MiB is cut off and reported.
//!
//! It also tracks where each token starts (line and 1-based byte column,
//! counted over everything fed), which QEMU 11 puts in front of its parse
//! errors. The column is taken when the machine returns to its start
//! state, so a token that follows a number or keyword directly (`1}`) is
//! placed one column to the right, as QEMU places it.

/// Limit on the bytes of one token, and of all tokens of one message.
pub const MAX_TOKEN_SIZE: usize = 64 << 20;

/// A token: its kind and its bytes.
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) text: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    LCurly,
    RCurly,
    LSquare,
    RSquare,
    Colon,
    Comma,
    Integer,
    Float,
    Keyword,
    String,
}

/// Where a token starts: line and column, both from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) line: u32,
    pub(crate) column: u32,
}

/// What the lexer reports to the streamer.
pub(crate) enum LexEvent<'a> {
    /// A token's kind and text; the receiver may take the text.
    Token(TokenKind, &'a mut Vec<u8>, Position),
    /// A byte that cannot continue the token; the text includes it.
    Error(&'a [u8], Position),
    /// A token that grew past [`MAX_TOKEN_SIZE`].
    Oversize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Recovery,
    DqString,
    DqEscape,
    SqString,
    SqEscape,
    Zero,
    Sign,
    Digits,
    Mantissa,
    MantissaDigits,
    ExpE,
    ExpSign,
    ExpDigits,
    Keyword,
}

/// One step of the machine for one byte.
enum Step {
    /// Consume the byte and move on.
    Go(State),
    /// Consume the byte, which completes a token.
    Emit(TokenKind),
    /// The token is complete without this byte; look at it again from Start.
    EndBefore(TokenKind),
    /// Consume the byte, which cannot continue the token: an error.
    Error,
    /// Leave recovery; look at this byte again from Start.
    Resume,
}

fn step(state: State, b: u8) -> Step {
    use State::*;
    use Step::*;
    let digit = b.is_ascii_digit();
    match state {
        Start => match b {
            b'"' => Go(DqString),
            b'\'' => Go(SqString),
            b'0' => Go(Zero),
            b'1'..=b'9' => Go(Digits),
            b'-' => Go(Sign),
            b'{' => Emit(TokenKind::LCurly),
            b'}' => Emit(TokenKind::RCurly),
            b'[' => Emit(TokenKind::LSquare),
            b']' => Emit(TokenKind::RSquare),
            b',' => Emit(TokenKind::Comma),
            b':' => Emit(TokenKind::Colon),
            b'a'..=b'z' => Go(Keyword),
            b' ' | b'\t' | b'\r' | b'\n' => Go(Start),
            _ => Error,
        },
        Recovery => match b {
            b'\t' => Go(Recovery),
            0x00..=0x1F | 0xFE | 0xFF | b'[' | b']' | b'{' | b'}' | b':' | b',' => Resume,
            _ => Go(Recovery),
        },
        DqString => match b {
            b'\\' => Go(DqEscape),
            b'"' => Emit(TokenKind::String),
            0x20..=0xFD => Go(DqString),
            _ => Error,
        },
        SqString => match b {
            b'\\' => Go(SqEscape),
            b'\'' => Emit(TokenKind::String),
            0x20..=0xFD => Go(SqString),
            _ => Error,
        },
        DqEscape | SqEscape => match b {
            0x20..=0xFD if state == DqEscape => Go(DqString),
            0x20..=0xFD => Go(SqString),
            _ => Error,
        },
        Zero => match b {
            b'0'..=b'9' => Error,
            b'.' => Go(Mantissa),
            _ => EndBefore(TokenKind::Integer),
        },
        Sign => match b {
            b'0' => Go(Zero),
            b'1'..=b'9' => Go(Digits),
            _ => Error,
        },
        Digits => match b {
            _ if digit => Go(Digits),
            b'e' | b'E' => Go(ExpE),
            b'.' => Go(Mantissa),
            _ => EndBefore(TokenKind::Integer),
        },
        Mantissa => {
            if digit {
                Go(MantissaDigits)
            } else {
                Error
            }
        }
        MantissaDigits => match b {
            _ if digit => Go(MantissaDigits),
            b'e' | b'E' => Go(ExpE),
            _ => EndBefore(TokenKind::Float),
        },
        ExpE => match b {
            b'-' | b'+' => Go(ExpSign),
            _ if digit => Go(ExpDigits),
            _ => Error,
        },
        ExpSign => {
            if digit {
                Go(ExpDigits)
            } else {
                Error
            }
        }
        ExpDigits => {
            if digit {
                Go(ExpDigits)
            } else {
                EndBefore(TokenKind::Float)
            }
        }
        Keyword => match b {
            b'a'..=b'z' => Go(Keyword),
            _ => EndBefore(TokenKind::Keyword),
        },
    }
}

#[derive(Debug)]
pub(crate) struct Lexer {
    state: State,
    token: Vec<u8>,
    /// Where the current token started.
    start: Position,
    /// Line of the byte being fed, and one past its column.
    line: u32,
    next_column: u32,
}

impl Lexer {
    /// Bytes held for the token being read.
    pub(crate) fn held(&self) -> usize {
        self.token.capacity()
    }

    pub(crate) fn new() -> Self {
        Lexer {
            state: State::Start,
            token: Vec::new(),
            start: Position { line: 1, column: 1 },
            line: 1,
            next_column: 1,
        }
    }

    /// Back to the start state: the next token starts here.
    fn restart(&mut self) {
        self.token.clear();
        self.state = State::Start;
        self.start = Position {
            line: self.line,
            column: self.next_column,
        };
    }

    /// Feeds one byte, reporting whatever it completes.
    pub(crate) fn feed(&mut self, b: u8, sink: &mut impl FnMut(LexEvent<'_>)) {
        if b == b'\n' {
            self.line += 1;
            self.next_column = 1;
        } else {
            self.next_column += 1;
        }
        loop {
            match step(self.state, b) {
                Step::Go(State::Start) => {
                    // whitespace between tokens
                    self.restart();
                    break;
                }
                Step::Go(State::Recovery) => {
                    // a byte skipped in recovery
                    self.token.clear();
                    break;
                }
                Step::Go(next) => {
                    self.token.push(b);
                    self.state = next;
                    break;
                }
                Step::Emit(kind) => {
                    self.token.push(b);
                    sink(LexEvent::Token(kind, &mut self.token, self.start));
                    self.restart();
                    break;
                }
                Step::EndBefore(kind) => {
                    sink(LexEvent::Token(kind, &mut self.token, self.start));
                    self.restart();
                }
                Step::Error => {
                    self.token.push(b);
                    sink(LexEvent::Error(&self.token, self.start));
                    self.token.clear();
                    self.state = State::Recovery;
                    break;
                }
                Step::Resume => self.restart(),
            }
        }
        self.check_size(sink);
    }

    /// A token that grew past the limit is reported and dropped.
    fn check_size(&mut self, sink: &mut impl FnMut(LexEvent<'_>)) {
        if self.token.len() > MAX_TOKEN_SIZE {
            sink(LexEvent::Oversize);
            self.token = Vec::new();
            self.state = State::Start;
        }
    }

    /// Feeds many bytes: [`feed`](Self::feed) for each, except that inside
    /// a string the bytes that cannot end it or be an error are taken as a
    /// whole run (the speed of reading a long string argument). Stops early
    /// after a byte once `stop()` holds; returns how many bytes it took.
    pub(crate) fn feed_all(
        &mut self,
        bytes: &[u8],
        sink: &mut impl FnMut(LexEvent<'_>),
        stop: impl Fn() -> bool,
    ) -> usize {
        let total = bytes.len();
        let mut bytes = bytes;
        while let Some((&b, rest)) = bytes.split_first() {
            if stop() {
                break;
            }
            let quote = match self.state {
                State::DqString => Some(b'"'),
                State::SqString => Some(b'\''),
                _ => None,
            };
            if let Some(quote) = quote {
                let plain = |c: &u8| *c != quote && *c != b'\\' && (0x20..=0xFD).contains(c);
                let run = bytes.iter().take_while(|c| plain(c)).count();
                if run > 0 {
                    // no further than one past the limit, where feed() stops too
                    let run = run.min(MAX_TOKEN_SIZE + 1 - self.token.len());
                    self.token.extend_from_slice(&bytes[..run]);
                    // these bytes hold no newline
                    self.next_column += run as u32;
                    bytes = &bytes[run..];
                    self.check_size(sink);
                    continue;
                }
            }
            self.feed(b, sink);
            bytes = rest;
        }
        total - bytes.len()
    }
}
