//! A deliberately small regular-expression matcher for `ready_line`.
//! Readiness lines are short and simple; a full regex engine would be a
//! new dependency for one match per output line at start-up.
//!
//! Supported: literals, `.`, classes `[a-z0-9_]` / `[^…]`, escapes
//! `\d \w \s \D \W \S` and `\` before any punctuation, the greedy
//! quantifiers `*`, `+` and `?`, and the anchors `^` and `$`. Not supported
//! (refused): groups, alternation, counted repetition.

use std::fmt;

/// One character matcher.
#[derive(Debug, Clone, PartialEq)]
enum Atom {
    Any,
    Char(char),
    /// Ranges, negated.
    Class(Vec<(char, char)>, bool),
}

impl Atom {
    fn matches(&self, c: char) -> bool {
        match self {
            Atom::Any => true,
            Atom::Char(x) => *x == c,
            Atom::Class(ranges, negated) => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rep {
    One,
    Star,
    Plus,
    Optional,
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Regex {
    items: Vec<(Atom, Rep)>,
    anchored_start: bool,
    anchored_end: bool,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct RegexError(String);

impl fmt::Display for RegexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "regex: {}", self.0)
    }
}

fn class_escape(c: char) -> Option<Atom> {
    let digit = vec![('0', '9')];
    let word = vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')];
    let space = vec![(' ', ' '), ('\t', '\t'), ('\r', '\r'), ('\n', '\n')];
    Some(match c {
        'd' => Atom::Class(digit, false),
        'D' => Atom::Class(digit, true),
        'w' => Atom::Class(word, false),
        'W' => Atom::Class(word, true),
        's' => Atom::Class(space, false),
        'S' => Atom::Class(space, true),
        _ => return None,
    })
}

impl Regex {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Result<Regex, RegexError> {
        let err = |m: &str| Err(RegexError(format!("{m} in {pattern:?}")));
        let mut chars = pattern.chars().peekable();
        let anchored_start = chars.next_if_eq(&'^').is_some();
        let mut items: Vec<(Atom, Rep)> = Vec::new();
        let mut anchored_end = false;
        while let Some(c) = chars.next() {
            let atom = match c {
                '$' if chars.peek().is_none() => {
                    anchored_end = true;
                    break;
                }
                '.' => Atom::Any,
                '\\' => match chars.next() {
                    Some(e) if e.is_ascii_alphanumeric() => match class_escape(e) {
                        Some(a) => a,
                        None => return err(&format!("unsupported escape \\{e}")),
                    },
                    Some(e) => Atom::Char(e),
                    None => return err("trailing backslash"),
                },
                '[' => {
                    let negated = chars.next_if_eq(&'^').is_some();
                    let mut ranges = Vec::new();
                    let mut closed = false;
                    while let Some(c) = chars.next() {
                        let lo = match c {
                            ']' if !ranges.is_empty() => {
                                closed = true;
                                break;
                            }
                            '\\' => match chars.next() {
                                Some(e) => match class_escape(e) {
                                    Some(Atom::Class(r, false)) => {
                                        ranges.extend(r);
                                        continue;
                                    }
                                    Some(_) => return err("negated escape inside a class"),
                                    None => e,
                                },
                                None => return err("trailing backslash"),
                            },
                            other => other,
                        };
                        let hi = if chars.peek() == Some(&'-') {
                            let mut ahead = chars.clone();
                            ahead.next();
                            match ahead.peek() {
                                Some(&h) if h != ']' => {
                                    chars.next();
                                    chars.next();
                                    h
                                }
                                _ => lo,
                            }
                        } else {
                            lo
                        };
                        if hi < lo {
                            return err("reversed range");
                        }
                        ranges.push((lo, hi));
                    }
                    if !closed {
                        return err("unclosed [");
                    }
                    Atom::Class(ranges, negated)
                }
                '(' | ')' | '|' | '{' | '}' => {
                    return err(&format!(
                        "`{c}` (groups, alternation, counts) is not supported"
                    ))
                }
                '*' | '+' | '?' => return err(&format!("`{c}` has nothing to repeat")),
                other => Atom::Char(other),
            };
            let rep = match chars.peek() {
                Some('*') => Rep::Star,
                Some('+') => Rep::Plus,
                Some('?') => Rep::Optional,
                _ => Rep::One,
            };
            if rep != Rep::One {
                chars.next();
                if matches!(chars.peek(), Some('*' | '+' | '?')) {
                    return err("stacked quantifiers");
                }
            }
            items.push((atom, rep));
        }
        Ok(Regex {
            items,
            anchored_start,
            anchored_end,
        })
    }

    /// True if the pattern matches anywhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        if self.anchored_start {
            return self.match_here(0, &chars, 0);
        }
        (0..=chars.len()).any(|start| self.match_here(0, &chars, start))
    }

    fn match_here(&self, item: usize, text: &[char], pos: usize) -> bool {
        let Some((atom, rep)) = self.items.get(item) else {
            return !self.anchored_end || pos == text.len();
        };
        let at = |p: usize| text.get(p).is_some_and(|&c| atom.matches(c));
        match rep {
            Rep::One => at(pos) && self.match_here(item + 1, text, pos + 1),
            Rep::Optional => {
                (at(pos) && self.match_here(item + 1, text, pos + 1))
                    || self.match_here(item + 1, text, pos)
            }
            Rep::Star | Rep::Plus => {
                let mut end = pos;
                while at(end) {
                    end += 1;
                }
                let min = if *rep == Rep::Plus { pos + 1 } else { pos };
                (min..=end)
                    .rev()
                    .any(|p| self.match_here(item + 1, text, p))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Regex::new(p).unwrap().is_match(t)
    }

    #[test]
    fn matches_the_supported_subset() {
        assert!(m("ready", "relay: ready on 127.0.0.1:25"));
        assert!(m(
            r"listening on 127\.0\.0\.1:\d+$",
            "listening on 127.0.0.1:2525"
        ));
        assert!(!m(r"127\.0\.0\.1:\d+$", "127.0.0.1:x"));
        assert!(m("^a.*c$", "abbbc"));
        assert!(!m("^a.*c$", "xabc"));
        assert!(m("colou?r", "color"));
        assert!(m("[A-Z][a-z]+ [0-9]+", "xx Relay 42"));
        assert!(m("[^ ]+=[^ ]+", "a listen=x"));
        assert!(!m("^[^ ]+$", "a b"));
        assert!(m(r"\s\w+\S", " abc!"));
        assert!(m("a+b", "caab"));
        assert!(!m("a+b", "b"));
        assert!(m("", "anything"));
        assert!(m("[-a]", "-"));
    }

    #[test]
    fn refuses_the_rest() {
        for bad in ["(a|b)", "a{2}", "*a", "a**", "[abc", r"\q", "a\\"] {
            assert!(Regex::new(bad).is_err(), "{bad}");
        }
    }
}
