//! Configuration: the TOML schema, its defaults, and validation.
//!
//! Every option has a default, so a missing file is a working config
//! (listen on 127.0.0.1:2525, relay only from loopback). Validation happens
//! while deserializing — each checked value is a newtype whose `Deserialize`
//! rejects bad input — so that every error carries the span of the offending
//! value, which [`error`] turns into `file:line: key: message`.

mod error;
mod schema;
mod units;

pub use error::ConfigError;
pub use schema::*;
pub use units::{parse_duration, ByteSize, Cidr, Seconds};

use std::path::Path;

impl Config {
    /// Loads `path`; a missing file yields the built-in defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(ConfigError::Io {
                file: path.display().to_string(),
                source: e,
            }),
        }
    }

    /// Parses and validates `text`, naming `origin` in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let file = origin.display().to_string();
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::from_toml(&file, text, &e))?;
        config
            .check_cross_field()
            .map_err(|(key, message)| ConfigError::at_key(&file, text, key, message))?;
        Ok(config)
    }

    /// Checks rules that involve more than one value (the single-value rules
    /// live in the newtypes). Returns the key to blame and the reason.
    fn check_cross_field(&self) -> Result<(), (&'static str, String)> {
        if self.ack == AckMode::Downstream && self.route != Route::Deliver {
            return Err((
                "ack",
                "ack = \"downstream\" answers with the destinations' replies, so it needs \
                 route = \"deliver\""
                    .into(),
            ));
        }
        if self.journal.compact_factor.is_nan() || self.journal.compact_factor < 1.0 {
            return Err(("compact_factor", "must be at least 1".into()));
        }
        if self.journal.segment_size.0 < 64 * 1024 {
            return Err(("segment_size", "must be at least 64KiB".into()));
        }
        if self.smtp.listen.is_empty() {
            return Err(("listen", "at least one listen address is required".into()));
        }
        if self.tls.certificate.is_some() != self.tls.private_key.is_some() {
            return Err((
                "certificate",
                "tls.certificate and tls.private_key must be given together".into(),
            ));
        }
        if self.smtp.max_recipients == 0 {
            return Err(("max_recipients", "must be at least 1".into()));
        }
        if self.smtp.max_errors == 0 {
            return Err(("max_errors", "must be at least 1".into()));
        }
        if self.smtp.max_hops == 0 {
            // Our own Received header is one hop: 0 would refuse everything.
            return Err(("max_hops", "must be at least 1".into()));
        }
        if let Err(e) = self.dns.validate() {
            return Err(("dns", e.to_string()));
        }
        if self.delivery.max_connections_per_destination == 0 {
            return Err((
                "max_connections_per_destination",
                "must be at least 1".into(),
            ));
        }
        if self.delivery.max_connections == 0 {
            return Err(("max_connections", "must be at least 1".into()));
        }
        if let Err(e) = crate::delivery::queues::Queues::new(
            &self.delivery.queues,
            &self
                .delivery
                .queue_defaults(&self.hostname, self.dns.smtp_port),
        ) {
            let key = if e.starts_with("source pool") {
                "source_pools"
            } else {
                "queues"
            };
            return Err((key, e));
        }
        if self.admin.enabled && !self.admin.allow_remote && !self.admin.listen.ip().is_loopback() {
            return Err((
                "admin.listen",
                format!(
                    "{} is not a loopback address; the admin API can pause and delete mail, \
                     so set `allow_remote = true` to expose it (behind a firewall)",
                    self.admin.listen
                ),
            ));
        }
        if self.backpressure.channel_capacity == 0 {
            return Err(("channel_capacity", "must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
