//! Configuration errors that point at the file, line and key.
//!
//! The toml crate reports a byte span; operators want `file:line` and the
//! key's name, as cargo does. We recover both from the source text: the line
//! from the span, the key from the `key =` on that line and the nearest
//! `[table]` header above it.

use std::fmt;

/// A configuration problem, ready to show to an operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("{file}: cannot read configuration: {source}")]
    Io {
        /// The configuration file.
        file: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A value is missing, unknown, of the wrong type or invalid.
    #[error("{0}")]
    Invalid(Located),
}

/// An error located in the source text.
#[derive(Debug)]
pub struct Located {
    /// The configuration file.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The dotted key, when known (`smtp.max_errors`).
    pub key: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl ConfigError {
    pub(super) fn from_toml(file: &str, text: &str, e: &toml::de::Error) -> Self {
        let (line, key) = match e.span() {
            Some(span) => {
                let line = line_of(text, span.start);
                (Some(line), key_at(text, line))
            }
            None => (None, None),
        };
        let message = e.message().trim().to_string();
        // For an unknown field toml points at the key itself: say which one.
        let key = key.or_else(|| unknown_field_name(&message));
        ConfigError::Invalid(Located {
            file: file.to_string(),
            line,
            key,
            message,
        })
    }

    /// An error about `key` found after parsing (a cross-field rule): the
    /// line is that of the key's first assignment in the text, if any.
    pub(super) fn at_key(file: &str, text: &str, key: &str, message: String) -> Self {
        // A dotted key (`admin.listen`) must be assigned in its table: the
        // same bare key may appear in another one (`smtp.listen`).
        let bare = key.rsplit_once('.').map_or(key, |(_, k)| k);
        let mut found = None;
        for (i, l) in text.lines().enumerate() {
            if assigned_key(l).as_deref() == Some(bare)
                && (bare == key || key_at(text, i + 1).as_deref() == Some(key))
            {
                found = Some(i + 1);
                break;
            }
        }
        let full_key = found
            .and_then(|line| key_at(text, line))
            .unwrap_or_else(|| key.to_string());
        ConfigError::Invalid(Located {
            file: file.to_string(),
            line: found,
            key: Some(full_key),
            message,
        })
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()
        .get(..end)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() + 1)
        .unwrap_or(1)
}

/// The key assigned on a line (`  max_errors = 3` → `max_errors`).
fn assigned_key(line: &str) -> Option<String> {
    let t = line.trim_start();
    if t.starts_with('#') || t.starts_with('[') {
        return None;
    }
    let (k, _) = t.split_once('=')?;
    let k = k.trim().trim_matches('"');
    (!k.is_empty()).then(|| k.to_string())
}

/// The dotted key for the assignment on `line` (1-based), prefixed with the
/// nearest table header above it.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let own = lines.get(line.checked_sub(1)?)?;
    let key = assigned_key(own);
    let table = lines.iter().take(line).rev().find_map(|l| {
        let t = l.trim();
        t.strip_prefix('[')
            .map(|r| r.trim_start_matches('[').trim_end_matches(']').trim())
            .map(str::to_string)
    });
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(t), None) => Some(t),
        (None, None) => None,
    }
}

fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next().map(str::to_string)
}
