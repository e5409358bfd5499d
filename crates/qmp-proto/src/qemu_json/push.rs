//! QEMU 11's JSON parser: it takes one token at a time, as it arrives, and
//! fails at the first token that cannot continue the value, where QEMU 10
//! and older first collect a whole message and then parse it.
//!
//! So an error is known (and answered) at once, its text names what was
//! expected at that point (`expecting ':'`, `expected ',' or '}'`), and the
//! streamer puts the token's line and column in front of it. Values are the
//! same as the older parser's; only errors differ.

use super::lexer::{Position, TokenKind};
use super::parser::{literal, take_string};
use super::{QDict, QObject};

/// What an open container waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Just after `{` or `[`: a member (or value), or the closing bracket.
    FirstOrClose,
    /// A key, after a comma.
    Key,
    /// The colon after a key.
    Colon,
    /// A value: after a colon, or after a comma in an array.
    Value,
    /// A comma or the closing bracket, after a member or element.
    CommaOrClose,
}

#[derive(Debug)]
enum Open {
    Object {
        dict: QDict,
        key: String,
        expect: Expect,
    },
    Array {
        list: Vec<QObject>,
        expect: Expect,
    },
}

impl Open {
    fn expect_mut(&mut self) -> &mut Expect {
        match self {
            Open::Object { expect, .. } | Open::Array { expect, .. } => expect,
        }
    }
}

/// The parser's state: the containers open so far.
#[derive(Debug, Default)]
pub(crate) struct PushParser {
    open: Vec<Open>,
}

/// A parse error's text, located as QEMU 11 locates it.
pub(crate) fn error(at: Position, what: impl std::fmt::Display) -> String {
    format!("{}:{}: JSON parse error, {what}", at.line, at.column)
}

impl PushParser {
    /// Forgets any value half read (after an error, once the input's
    /// brackets balance again).
    pub(crate) fn reset(&mut self) {
        self.open.clear();
    }

    /// Takes one token: `Ok(Some(value))` when it completes a top-level
    /// value, `Ok(None)` when more is needed, or the error text.
    pub(crate) fn feed(
        &mut self,
        kind: TokenKind,
        text: &mut Vec<u8>,
        at: Position,
    ) -> Result<Option<QObject>, String> {
        let expect = self.open.last().map_or(Expect::Value, |o| match o {
            Open::Object { expect, .. } | Open::Array { expect, .. } => *expect,
        });
        let in_object = matches!(self.open.last(), Some(Open::Object { .. }));
        let value = match (expect, kind) {
            (Expect::FirstOrClose, TokenKind::RCurly) if in_object => self.close(),
            (Expect::FirstOrClose, TokenKind::RSquare) if !in_object => self.close(),
            (Expect::FirstOrClose | Expect::Key, _) if in_object => {
                if kind != TokenKind::String {
                    return Err(error(at, "expecting key"));
                }
                let key = take_string(text).map_err(|e| error(at, e))?;
                if let Some(Open::Object { key: k, expect, .. }) = self.open.last_mut() {
                    *k = key;
                    *expect = Expect::Colon;
                }
                return Ok(None);
            }
            (Expect::Colon, TokenKind::Colon) => {
                self.set_expect(Expect::Value);
                return Ok(None);
            }
            (Expect::Colon, _) => return Err(error(at, "expecting ':'")),
            (Expect::CommaOrClose, TokenKind::Comma) => {
                self.set_expect(if in_object {
                    Expect::Key
                } else {
                    Expect::Value
                });
                return Ok(None);
            }
            (Expect::CommaOrClose, TokenKind::RCurly) if in_object => self.close(),
            (Expect::CommaOrClose, TokenKind::RSquare) if !in_object => self.close(),
            (Expect::CommaOrClose, _) if in_object => return Err(error(at, "expected ',' or '}'")),
            (Expect::CommaOrClose, _) => return Err(error(at, "expected ',' or ']'")),
            // a value: at the top, after a colon, or in an array
            (_, TokenKind::LCurly) => {
                self.open.push(Open::Object {
                    dict: QDict::new(),
                    key: String::new(),
                    expect: Expect::FirstOrClose,
                });
                return Ok(None);
            }
            (_, TokenKind::LSquare) => {
                self.open.push(Open::Array {
                    list: Vec::new(),
                    expect: Expect::FirstOrClose,
                });
                return Ok(None);
            }
            (_, TokenKind::String | TokenKind::Integer | TokenKind::Float | TokenKind::Keyword) => {
                literal(kind, text).map_err(|e| error(at, e))?
            }
            _ => return Err(error(at, "expecting value")),
        };
        self.complete(value, at)
    }

    fn set_expect(&mut self, next: Expect) {
        if let Some(open) = self.open.last_mut() {
            *open.expect_mut() = next;
        }
    }

    /// Pops the innermost container as a value.
    fn close(&mut self) -> QObject {
        match self.open.pop() {
            Some(Open::Object { dict, .. }) => QObject::Dict(dict),
            Some(Open::Array { list, .. }) => QObject::List(list),
            None => unreachable!("close() follows a container's own token"),
        }
    }

    /// A value is complete: it is the result, or goes into its container.
    fn complete(&mut self, value: QObject, at: Position) -> Result<Option<QObject>, String> {
        match self.open.last_mut() {
            None => Ok(Some(value)),
            Some(Open::Object { dict, key, expect }) => {
                let key = std::mem::take(key);
                if dict.contains_key(&key) {
                    return Err(error(at, "duplicate key"));
                }
                dict.insert(key, value);
                *expect = Expect::CommaOrClose;
                Ok(None)
            }
            Some(Open::Array { list, expect }) => {
                list.push(value);
                *expect = Expect::CommaOrClose;
                Ok(None)
            }
        }
    }
}
