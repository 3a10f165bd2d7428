//! Response rules: a reply code and a regular expression on the reply's
//! text → what to do about it (`suspend 30m`, `throttle 50%`, `bounce`,
//! `retry-later`, `next-mx`).
//!
//! The default set for the big providers' documented throttling replies is
//! `config/rules.toml`, embedded at build time; an operator's rules (a file
//! and/or inline `[[delivery.rules]]`) are tried first. Every expression is
//! compiled once, when the configuration is loaded; matching runs only on
//! failure replies and never allocates (the enhanced status code is
//! rendered into a stack buffer and matched as well as the text).

use crate::smtp::Reply;
use regex::Regex;
use serde::Deserialize;
use std::time::Duration;

/// The rules that ship with Sluice.
pub const DEFAULT_RULES: &str = include_str!("../../../config/rules.toml");

/// Which reply codes a rule applies to: `421` or `"4xx"`/`"5xx"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum CodeMatch {
    /// One code.
    Exact(u16),
    /// A class (`"4xx"`, `"5xx"`) or a code as a string.
    Pattern(String),
}

/// One rule as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Reply code or class; absent matches any 4xx or 5xx.
    #[serde(default)]
    pub code: Option<CodeMatch>,
    /// Regular expression searched in the reply text and enhanced code.
    pub text: String,
    /// `suspend 30m`, `throttle 50%`, `bounce`, `retry-later`, `next-mx`.
    pub action: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<RuleConfig>,
}

/// What a matching rule asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// No attempt at the destination for this long, then a probe.
    Suspend(Duration),
    /// Keep this fraction (0 < f < 1) of the rate and the connections.
    Throttle(f64),
    /// Fail the recipient now, with a DSN, whatever the code said.
    Bounce,
    /// An ordinary deferral (also for a 5xx).
    RetryLater,
    /// Retry at once through another MX host.
    NextMx,
}

impl Action {
    /// Parses `suspend 30m`, `throttle 50%`, `bounce`, `retry-later`, `next-mx`.
    pub fn parse(s: &str) -> Result<Action, String> {
        let s = s.trim();
        let (verb, arg) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
        let arg = arg.trim();
        match (verb, arg) {
            ("bounce", "") => Ok(Action::Bounce),
            ("retry-later", "") => Ok(Action::RetryLater),
            ("next-mx", "") => Ok(Action::NextMx),
            ("suspend", d) => crate::config::parse_duration(d)
                .ok()
                .filter(|d| !d.is_zero())
                .map(Action::Suspend)
                .ok_or_else(|| format!("`{s}`: expected a duration such as `suspend 30m`")),
            ("throttle", p) => p
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok())
                .filter(|n| *n > 0.0 && *n < 100.0)
                .map(|n| Action::Throttle(n / 100.0))
                .ok_or_else(|| {
                    format!("`{s}`: expected a percentage below 100 such as `throttle 50%`")
                }),
            _ => Err(format!(
                "`{s}`: expected suspend DURATION, throttle N%, bounce, retry-later or next-mx"
            )),
        }
    }

    /// How the action reads in logs and the control plane.
    pub fn describe(&self) -> String {
        match self {
            Action::Suspend(d) => format!("suspend {}s", d.as_secs()),
            Action::Throttle(f) => format!("throttle {:.0}%", f * 100.0),
            Action::Bounce => "bounce".into(),
            Action::RetryLater => "retry-later".into(),
            Action::NextMx => "next-mx".into(),
        }
    }
}

#[derive(Debug)]
struct Rule {
    code: (u16, u16),
    re: Regex,
    action: Action,
}

/// A compiled, ordered rule set; the first match wins.
#[derive(Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

fn code_range(c: &Option<CodeMatch>) -> Result<(u16, u16), String> {
    match c {
        None => Ok((400, 599)),
        Some(CodeMatch::Exact(n)) if (400..=599).contains(n) => Ok((*n, *n)),
        Some(CodeMatch::Pattern(p)) => {
            let p = p.trim().to_ascii_lowercase();
            match p.as_bytes() {
                [c @ (b'4' | b'5'), b'x', b'x'] => {
                    let base = u16::from(c - b'0') * 100;
                    Ok((base, base + 99))
                }
                _ => match p.parse::<u16>() {
                    Ok(n) if (400..=599).contains(&n) => Ok((n, n)),
                    _ => Err(format!("code `{p}`: expected 4xx, 5xx or a code 400-599")),
                },
            }
        }
        Some(CodeMatch::Exact(n)) => Err(format!("code {n}: expected a code 400-599")),
    }
}

impl Rules {
    /// Compiles `configs` in order.
    pub fn compile(configs: &[RuleConfig]) -> Result<Rules, String> {
        let mut rules = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let at = |e: String| format!("rule {} (`{}`): {e}", i + 1, c.text);
            let re = Regex::new(&c.text).map_err(|e| at(e.to_string()))?;
            rules.push(Rule {
                code: code_range(&c.code).map_err(at)?,
                re,
                action: Action::parse(&c.action).map_err(at)?,
            });
        }
        Ok(Rules { rules })
    }

    /// Parses a rules file (`[[rule]]` tables).
    pub fn parse_file(text: &str) -> Result<Vec<RuleConfig>, String> {
        toml::from_str::<RulesFile>(text)
            .map(|f| f.rule)
            .map_err(|e| e.to_string())
    }

    /// The operator's rules (file first, then inline), then the defaults
    /// unless `defaults` is false.
    pub fn build(
        file: Option<&std::path::Path>,
        inline: &[RuleConfig],
        defaults: bool,
    ) -> Result<Rules, String> {
        let mut all = Vec::new();
        if let Some(p) = file {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("rules_file {}: {e}", p.display()))?;
            all.extend(Self::parse_file(&text).map_err(|e| format!("{}: {e}", p.display()))?);
        }
        all.extend(inline.iter().cloned());
        if defaults {
            all.extend(Self::parse_file(DEFAULT_RULES).map_err(|e| format!("default rules: {e}"))?);
        }
        Self::compile(&all)
    }

    /// Rules in the set.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The action of the first rule matching `r`, if any (never for 2xx/3xx).
    pub fn classify(&self, r: &Reply) -> Option<Action> {
        let code = r.code();
        if code < 400 || self.rules.is_empty() {
            return None;
        }
        let mut buf = [0u8; 24];
        let enhanced = r.enhanced().map(|e| render_enhanced(e, &mut buf));
        self.rules
            .iter()
            .find(|rule| {
                (rule.code.0..=rule.code.1).contains(&code)
                    && (rule.re.is_match(r.text()) || enhanced.is_some_and(|e| rule.re.is_match(e)))
            })
            .map(|rule| rule.action)
    }
}

/// `4.7.28` into `buf`, without allocating.
fn render_enhanced((a, b, c): (u8, u16, u16), buf: &mut [u8; 24]) -> &str {
    use std::io::Write;
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cur, "{a}.{b}.{c}");
    let n = usize::try_from(cur.position()).unwrap_or(0);
    std::str::from_utf8(buf.get(..n).unwrap_or_default()).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, e: Option<(u8, u16, u16)>, text: &str) -> Reply {
        Reply::new(code, e, text.to_string())
    }

    #[test]
    fn actions_parse_and_bad_ones_are_explained() {
        assert_eq!(
            Action::parse("suspend 30m"),
            Ok(Action::Suspend(Duration::from_secs(1800)))
        );
        assert_eq!(Action::parse("throttle 50%"), Ok(Action::Throttle(0.5)));
        assert_eq!(Action::parse(" bounce "), Ok(Action::Bounce));
        assert_eq!(Action::parse("retry-later"), Ok(Action::RetryLater));
        assert_eq!(Action::parse("next-mx"), Ok(Action::NextMx));
        assert!(Action::parse("throttle 150%")
            .unwrap_err()
            .contains("below 100"));
        assert!(Action::parse("suspend").is_err());
        assert!(Action::parse("explode").unwrap_err().contains("expected"));
    }

    #[test]
    fn the_default_rules_compile_and_know_the_providers() {
        let r = Rules::build(None, &[], true).unwrap();
        assert!(r.len() >= 10);
        let gmail = reply(
            421,
            Some((4, 7, 28)),
            "[1.2.3.4] Our system has detected an unusual rate of unsolicited mail",
        );
        assert_eq!(r.classify(&gmail), Some(Action::Throttle(0.5)));
        let yahoo = reply(
            421,
            Some((4, 7, 0)),
            "[TSS04] Messages from 1.2.3.4 temporarily deferred due to unexpected volume",
        );
        assert_eq!(
            r.classify(&yahoo),
            Some(Action::Suspend(Duration::from_secs(900)))
        );
        let ms = reply(
            451,
            Some((4, 7, 500)),
            "Server busy. Please try again later",
        );
        assert_eq!(r.classify(&ms), Some(Action::Throttle(0.5)));
        let limited = reply(
            450,
            Some((4, 7, 1)),
            "Recipient address rate limited, please try again later",
        );
        assert_eq!(r.classify(&limited), Some(Action::Throttle(0.8)));
        let suspended = reply(
            421,
            Some((4, 7, 0)),
            "Sending temporarily suspended, try again later",
        );
        assert_eq!(
            r.classify(&suspended),
            Some(Action::Suspend(Duration::from_secs(60)))
        );
        // Ordinary failures are no throttling signal.
        assert_eq!(
            r.classify(&reply(451, Some((4, 3, 0)), "Temporary error")),
            None
        );
        assert_eq!(
            r.classify(&reply(550, Some((5, 1, 1)), "No such user")),
            None
        );
        assert_eq!(r.classify(&reply(250, None, "rate limited")), None);
    }

    #[test]
    fn operator_rules_come_first_and_codes_must_match() {
        let own = Rules::parse_file(
            "[[rule]]\ncode = 451\ntext = '(?i)mailbox full'\naction = \"bounce\"\n\
             [[rule]]\ncode = \"5xx\"\ntext = 'greylisted'\naction = \"retry-later\"\n",
        )
        .unwrap();
        let r = Rules::build(None, &own, true).unwrap();
        assert_eq!(
            r.classify(&reply(451, None, "Mailbox FULL")),
            Some(Action::Bounce)
        );
        assert_eq!(r.classify(&reply(452, None, "mailbox full")), None);
        assert_eq!(
            r.classify(&reply(550, None, "greylisted")),
            Some(Action::RetryLater)
        );
        let bad = Rules::compile(&[RuleConfig {
            code: Some(CodeMatch::Pattern("6xx".into())),
            text: "x".into(),
            action: "bounce".into(),
        }]);
        assert!(bad.unwrap_err().contains("rule 1"));
        let bad = Rules::compile(&[RuleConfig {
            code: None,
            text: "(".into(),
            action: "bounce".into(),
        }]);
        assert!(bad.unwrap_err().contains("rule 1"));
    }
}
