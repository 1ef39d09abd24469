//! Named user locks (`GET_LOCK`) a client holds, so that its pin can end
//! when it has released them all: a client pinned only for its locks goes
//! back to sharing connections, instead of keeping one until it leaves
//! (ActiveRecord's advisory locks, PHP mutexes, in long-lived pools). The
//! names come from the statement's own text; a lock named any other way
//! (an expression, a parameter) keeps the pin until `RELEASE_ALL_LOCKS()`.

use crate::lexer::{Lexer, Token};
use std::collections::HashMap;

/// What a statement does to user locks, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOp {
    /// `GET_LOCK(name, ...)`; None: a name Sluice cannot read.
    Get(Option<String>),
    /// `RELEASE_LOCK(name)`.
    Release(Option<String>),
    /// `RELEASE_ALL_LOCKS()`.
    ReleaseAll,
}

/// The lock operations in `sql` (a COM_QUERY's text).
pub fn lock_ops(sql: &str) -> Vec<LockOp> {
    let mut ops = Vec::new();
    let mut tokens = Lexer::new(sql).peekable();
    while let Some(token) = tokens.next() {
        let Token::Word(word) = token else { continue };
        let op: fn(Option<String>) -> LockOp = if word.eq_ignore_ascii_case("GET_LOCK") {
            LockOp::Get
        } else if word.eq_ignore_ascii_case("RELEASE_LOCK") {
            LockOp::Release
        } else if word.eq_ignore_ascii_case("RELEASE_ALL_LOCKS") {
            if tokens.peek() == Some(&Token::Punct(b'(')) {
                ops.push(LockOp::ReleaseAll);
            }
            continue;
        } else {
            continue;
        };
        if tokens.next() != Some(Token::Punct(b'(')) {
            continue;
        }
        let name = match (tokens.next(), tokens.peek()) {
            (Some(Token::Quoted(quoted)), Some(Token::Punct(b',' | b')'))) => lock_name(quoted),
            _ => None,
        };
        ops.push(op(name));
    }
    ops
}

/// A quoted string's lock name, as the server compares them (case-blind);
/// None for an identifier or a string with escapes.
fn lock_name(quoted: &str) -> Option<String> {
    let inner = quoted
        .strip_prefix('\'')
        .and_then(|q| q.strip_suffix('\''))
        .or_else(|| quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')))?;
    if inner.contains(['\'', '"', '\\']) {
        return None;
    }
    Some(inner.to_lowercase())
}

/// The user locks a client may hold. A `GET_LOCK` counts as taken whatever
/// it returned (a lock not granted then keeps the pin: the safe side), and
/// the server counts a name taken twice as two locks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UserLocks {
    held: HashMap<String, u32>,
    /// A lock whose name Sluice could not read may be held.
    unknown: bool,
}

impl UserLocks {
    pub fn apply(&mut self, ops: &[LockOp]) {
        for op in ops {
            match op {
                LockOp::Get(Some(name)) => *self.held.entry(name.clone()).or_default() += 1,
                LockOp::Get(None) => self.unknown = true,
                LockOp::Release(Some(name)) => {
                    if let Some(count) = self.held.get_mut(name) {
                        *count -= 1;
                        if *count == 0 {
                            self.held.remove(name);
                        }
                    }
                }
                // Which lock it released is unknown: the others stay.
                LockOp::Release(None) => {}
                LockOp::ReleaseAll => *self = UserLocks::default(),
            }
        }
    }

    /// A lock of unknown name was taken: only releasing all ends it.
    pub fn mark_unknown(&mut self) {
        self.unknown = true;
    }

    /// Certainly none held.
    pub fn none_held(&self) -> bool {
        self.held.is_empty() && !self.unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locks_after(statements: &[&str]) -> UserLocks {
        let mut locks = UserLocks::default();
        for sql in statements {
            locks.apply(&lock_ops(sql));
        }
        locks
    }

    #[test]
    fn reads_the_lock_operations_of_a_statement() {
        assert_eq!(
            lock_ops("SELECT GET_LOCK('A', 10), RELEASE_LOCK(\"b\"), release_all_locks()"),
            vec![
                LockOp::Get(Some("a".into())),
                LockOp::Release(Some("b".into())),
                LockOp::ReleaseAll
            ]
        );
        assert_eq!(
            lock_ops("SELECT GET_LOCK(CONCAT('a', @x), 1)"),
            vec![LockOp::Get(None)]
        );
        assert_eq!(lock_ops("SELECT GET_LOCK(?, 1)"), vec![LockOp::Get(None)]);
        assert_eq!(lock_ops("SELECT 'GET_LOCK(''a'', 1)'"), vec![]);
        assert_eq!(lock_ops("SELECT get_lock FROM t"), vec![]);
    }

    #[test]
    fn none_held_only_once_every_lock_is_released() {
        assert!(locks_after(&[]).none_held());
        assert!(!locks_after(&["SELECT GET_LOCK('a', 0)"]).none_held());
        assert!(locks_after(&["SELECT GET_LOCK('a', 0)", "SELECT RELEASE_LOCK('A')"]).none_held());
        // Taken twice: released twice.
        let twice = [
            "SELECT GET_LOCK('a', 0)",
            "SELECT GET_LOCK('a', 0)",
            "SELECT RELEASE_LOCK('a')",
        ];
        assert!(!locks_after(&twice).none_held());
        // Releasing another name leaves this one.
        assert!(!locks_after(&["DO GET_LOCK('a', 0)", "DO RELEASE_LOCK('b')"]).none_held());
        // A name Sluice cannot read: until RELEASE_ALL_LOCKS().
        let unknown = ["SELECT GET_LOCK(@name, 0)", "SELECT RELEASE_LOCK(@name)"];
        assert!(!locks_after(&unknown).none_held());
        assert!(locks_after(&["SELECT GET_LOCK(@name, 0)", "SELECT RELEASE_ALL_LOCKS()"]).none_held());
    }
}
