//! Read-mostly state shared by every core: configuration, the reloadable
//! TLS and AUTH material (swapped atomically on SIGHUP), and the shards'
//! published loads. Nothing here is written on the mail path.

use crate::auth::Users;
use crate::config::Config;
use crate::shard::ShardLoad;
use crate::smtp::ServerConfig;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// State shared by all cores.
pub struct Shared {
    /// The configuration the daemon started with.
    pub config: Config,
    /// Where it came from (re-read on SIGHUP).
    pub config_path: Option<PathBuf>,
    /// The SMTP server settings derived from `config`.
    pub smtp: Arc<ServerConfig>,
    /// The current STARTTLS configuration, if TLS is configured.
    pub tls: ArcSwapOption<rustls::ServerConfig>,
    /// The current AUTH users.
    pub users: ArcSwap<Users>,
    /// Each shard's published load, by shard index.
    pub loads: Vec<Arc<ShardLoad>>,
    /// Set by SIGTERM/SIGINT.
    pub stopping: AtomicBool,
    /// Bumped by SIGHUP: log files are reopened.
    pub log_reopen: Arc<std::sync::atomic::AtomicU64>,
}

impl Shared {
    /// Builds the shared state, loading TLS and AUTH files.
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        shards: usize,
    ) -> Result<Self, String> {
        let tls = load_tls(&config)?;
        let users = load_users(&config)?;
        let smtp = Arc::new(ServerConfig {
            hostname: config.hostname.clone(),
            max_message_size: config.smtp.max_message_size.as_usize(),
            max_recipients: config.smtp.max_recipients,
            max_errors: config.smtp.max_errors,
            max_line_length: 1000,
            offer_starttls: tls.is_some(),
            auth_enabled: config.auth.users_file.is_some(),
            auth_without_tls: config.auth.allow_plaintext,
            allow_undeclared_8bit: config.smtp.allow_undeclared_8bit,
            command_timeout: config.smtp.command_timeout.0,
            data_timeout: config.smtp.data_timeout.0,
        });
        Ok(Shared {
            smtp,
            tls: ArcSwapOption::new(tls),
            users: ArcSwap::from_pointee(users),
            loads: super::new_loads(shards),
            stopping: AtomicBool::new(false),
            log_reopen: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            config,
            config_path,
        })
    }

    /// Whether `ip` may relay without authenticating.
    pub fn relay_allowed(&self, ip: IpAddr) -> bool {
        self.config
            .smtp
            .relay_networks
            .iter()
            .any(|net| net.contains(ip))
    }

    /// Re-reads the TLS certificate and AUTH users. On any error the old
    /// material stays in force and the error is returned.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = match &self.config_path {
            Some(p) => Config::load(p).map_err(|e| e.to_string())?,
            None => self.config.clone(),
        };
        // Only the TLS and AUTH files are reloadable so far; the rest of the
        // configuration needs a restart.
        let tls = load_tls(&fresh)?;
        let users = load_users(&fresh)?;
        if tls.is_some() != self.smtp.offer_starttls {
            return Err("adding or removing TLS needs a restart".into());
        }
        self.tls.store(tls);
        self.users.store(Arc::new(users));
        Ok(())
    }
}

fn load_tls(config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    match (&config.tls.certificate, &config.tls.private_key) {
        (Some(c), Some(k)) => crate::tls::load_server_config(c, k).map(Some),
        _ => Ok(None),
    }
}

fn load_users(config: &Config) -> Result<Users, String> {
    match &config.auth.users_file {
        Some(p) => Users::load(p),
        None => Ok(Users::default()),
    }
}

/// SIGHUP (and `sluicectl reload`): reopen log files and reload the
/// reloadable configuration.
pub(crate) fn reload(shared: &Shared) -> Result<(), String> {
    shared.log_reopen.fetch_add(1, Ordering::Relaxed);
    shared.reload()
}

/// Handle to the signal thread.
pub struct SignalThread {
    handle: signal_hook::iterator::Handle,
}

impl SignalThread {
    /// Stops the signal thread.
    pub fn close(self) {
        self.handle.close();
    }
}

/// SIGTERM/SIGINT request a stop; SIGHUP reloads TLS and AUTH material.
/// Each is announced to systemd through `notifier`.
pub fn spawn_signal_thread(
    shared: Arc<Shared>,
    notifier: Arc<crate::notify::Notifier>,
) -> Result<SignalThread, String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                match sig {
                    SIGHUP => {
                        notifier.reloading();
                        // READY=1 either way: a refused reload leaves the
                        // old configuration serving.
                        match reload(&shared) {
                            Ok(()) => {
                                tracing::info!("reloaded TLS certificate and AUTH users");
                                eprintln!("sluice: reloaded");
                                notifier.ready("running; last reload accepted");
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "reload refused; keeping the old configuration");
                                eprintln!("sluice: reload refused: {e}");
                                notifier.ready(&format!("running; last reload refused: {e}"));
                            }
                        }
                    }
                    _ => {
                        notifier.stopping();
                        tracing::info!(signal = sig, "stopping");
                        shared.stopping.store(true, Ordering::Relaxed);
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start signal thread: {e}"))?;
    Ok(SignalThread { handle })
}
