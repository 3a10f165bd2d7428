//! Placeholder substitution in SUT config templates and command lines.
//! Addresses and directories are only known once run has bound its
//! sockets, so scenarios name them (`{listen}`, `{sink_port}`…) instead.
//!
//! A `{` followed by lower-case letters or `_` and a `}` is a placeholder
//! and must be a known one: a typo fails the run instead of reaching the
//! SUT. Anything else (TOML inline tables such as `{ a = 1 }`) is left alone.

use crate::error::{Error, Result};

/// Placeholder names and their values.
#[derive(Debug, Clone, Default)]
pub struct Placeholders {
    values: Vec<(&'static str, String)>,
}

impl Placeholders {
    /// Sets (or replaces) one value.
    pub fn set(&mut self, name: &'static str, value: impl Into<String>) {
        let value = value.into();
        match self.values.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.values.push((name, value)),
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `text` with every placeholder replaced.
    pub fn substitute(&self, text: &str) -> Result<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let (before, tail) = rest.split_at(open);
            out.push_str(before);
            let name_len = tail
                .get(1..)
                .unwrap_or_default()
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
                .count();
            let is_placeholder = name_len > 0 && tail.as_bytes().get(name_len + 1) == Some(&b'}');
            if !is_placeholder {
                out.push('{');
                rest = tail.get(1..).unwrap_or_default();
                continue;
            }
            let name = tail.get(1..=name_len).unwrap_or_default();
            let value = self.get(name).ok_or_else(|| {
                let known: Vec<String> = self
                    .values
                    .iter()
                    .map(|(n, _)| format!("{{{n}}}"))
                    .collect();
                Error::Scenario(format!(
                    "unknown placeholder {{{name}}} (known: {})",
                    known.join(", ")
                ))
            })?;
            out.push_str(value);
            rest = tail.get(name_len + 2..).unwrap_or_default();
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_known_names_and_leaves_toml_alone() {
        let mut p = Placeholders::default();
        p.set("listen", "127.0.0.1:2525");
        p.set("sink_port", "2625");
        let t = "listen = [\"{listen}\"]\nx = { a = 1 }\nport = {sink_port}{sink_port}\n{}";
        assert_eq!(
            p.substitute(t).unwrap(),
            "listen = [\"127.0.0.1:2525\"]\nx = { a = 1 }\nport = 26252625\n{}"
        );
        let e = p.substitute("{lsiten}").unwrap_err().to_string();
        assert!(e.contains("{lsiten}") && e.contains("{listen}"), "{e}");
        assert_eq!(p.substitute("{{listen}").unwrap(), "{127.0.0.1:2525");
    }
}
