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
    /// The configuration the daemon started with (what needs a restart to
    /// change is read from here).
    pub config: Config,
    /// The configuration in force: `config` until a SIGHUP loads a newer
    /// one. Delivery limits, queues, routes and the SMTP limits come from
    /// here.
    pub live: ArcSwap<Config>,
    /// Bumped on every accepted reload; shards compare it to re-read `live`.
    pub generation: std::sync::atomic::AtomicU64,
    /// The generation each shard has applied.
    pub applied: Vec<std::sync::atomic::AtomicU64>,
    /// Where it came from (re-read on SIGHUP).
    pub config_path: Option<PathBuf>,
    /// The SMTP server settings derived from `live`.
    pub smtp: ArcSwap<ServerConfig>,
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
    /// Batches sent to another core and not taken in yet.
    pub in_flight: std::sync::atomic::AtomicUsize,
    /// Cores whose sessions have ended after a stop request.
    pub ingress_closed: std::sync::atomic::AtomicUsize,
    /// Inbound sessions per client address and network, node-wide.
    pub clients: Arc<crate::ingress::limits::ClientTable>,
    /// Failed AUTH attempts per client address, node-wide.
    pub auth_failures: crate::ingress::limits::AuthFailures,
    /// The password-hashing threads.
    pub verifier: crate::auth::pool::Verifier,
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
        let smtp = server_config(&config, tls.is_some());
        let verifier = crate::auth::pool::Verifier::start(
            config.auth.verify_threads,
            config.auth.verify_queue,
        )?;
        Ok(Shared {
            clients: Default::default(),
            auth_failures: Default::default(),
            verifier,
            smtp: ArcSwap::from_pointee(smtp),
            tls: ArcSwapOption::new(tls),
            users: ArcSwap::from_pointee(users),
            loads: super::new_loads(shards),
            stopping: AtomicBool::new(false),
            log_reopen: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            ingress_closed: std::sync::atomic::AtomicUsize::new(0),
            live: ArcSwap::from_pointee(config.clone()),
            generation: std::sync::atomic::AtomicU64::new(0),
            applied: (0..shards)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
            config,
            config_path,
        })
    }

    /// Whether `ip` may relay without authenticating.
    pub fn relay_allowed(&self, ip: IpAddr) -> bool {
        self.live
            .load()
            .smtp
            .relay_networks
            .iter()
            .any(|net| net.contains(ip))
    }

    /// Re-reads the configuration file. What can change in flight does —
    /// TLS certificate, AUTH users, SMTP limits and relay networks, delivery
    /// limits, queues and their rules, static routes and the smarthost —
    /// without dropping a connection; on any error the old configuration
    /// stays in force and the error is returned. Settings that need a
    /// restart are named in the `Ok` message.
    pub fn reload(&self) -> Result<String, String> {
        let fresh = match &self.config_path {
            Some(p) => Config::load(p).map_err(|e| e.to_string())?,
            None => self.config.clone(),
        };
        let tls = load_tls(&fresh)?;
        let users = load_users(&fresh)?;
        if tls.is_some() != self.smtp.load().offer_starttls {
            return Err("adding or removing TLS needs a restart".into());
        }
        // Everything a shard would build from it must build: check now, so
        // a bad queue or route is refused here, not on the cores.
        fresh.dns.validate().map_err(|e| e.to_string())?;
        crate::dns::routes::Routes::new(
            &fresh.dns.routes,
            fresh.dns.smarthost.as_ref(),
            fresh.dns.smtp_port,
        )
        .map_err(|e| e.to_string())?;
        crate::delivery::queues::Queues::new(
            &fresh.delivery.queues,
            &fresh
                .delivery
                .queue_defaults(&fresh.hostname, fresh.dns.smtp_port),
        )?;
        let restart = needs_restart(&self.config, &fresh);
        self.smtp
            .store(Arc::new(server_config(&fresh, tls.is_some())));
        self.tls.store(tls);
        self.users.store(Arc::new(users));
        self.live.store(Arc::new(fresh));
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(if restart.is_empty() {
            String::new()
        } else {
            format!("unchanged until a restart: {}", restart.join(", "))
        })
    }
}

/// The settings a reload cannot apply that differ in `fresh`.
fn needs_restart(old: &Config, fresh: &Config) -> Vec<&'static str> {
    let mut v = Vec::new();
    if old.smtp.listen != fresh.smtp.listen {
        v.push("smtp.listen");
    }
    if old.cores != fresh.cores {
        v.push("cores");
    }
    if old.ack != fresh.ack {
        v.push("ack");
    }
    if old.route != fresh.route {
        v.push("route");
    }
    if old.auth.verify_threads != fresh.auth.verify_threads {
        v.push("auth.verify_threads");
    }
    if old.auth.verify_queue != fresh.auth.verify_queue {
        v.push("auth.verify_queue");
    }
    if old.state_dir != fresh.state_dir {
        v.push("state_dir");
    }
    if old.hostname != fresh.hostname {
        v.push("hostname (EHLO of outbound connections keeps the new name)");
    }
    v
}

fn server_config(config: &Config, tls: bool) -> ServerConfig {
    ServerConfig {
        hostname: config.hostname.clone(),
        max_message_size: config.smtp.max_message_size.as_usize(),
        max_recipients: config.smtp.max_recipients,
        max_errors: config.smtp.max_errors,
        max_line_length: 1000,
        offer_starttls: tls,
        auth_enabled: config.auth.users_file.is_some(),
        auth_without_tls: config.auth.allow_plaintext,
        allow_undeclared_8bit: config.smtp.allow_undeclared_8bit,
        command_timeout: config.smtp.command_timeout.0,
        data_timeout: config.smtp.data_timeout.0,
        max_hops: config.smtp.max_hops,
        max_junk_commands: config.smtp.max_junk_commands,
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
pub(crate) fn reload(shared: &Shared) -> Result<String, String> {
    shared.log_reopen.fetch_add(1, Ordering::Relaxed);
    let note = shared.reload()?;
    // "Reloaded" means in force: wait (briefly) for every shard to apply it.
    let generation = shared.generation.load(Ordering::Acquire);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while shared
        .applied
        .iter()
        .any(|a| a.load(Ordering::Acquire) < generation)
    {
        if std::time::Instant::now() >= deadline {
            return Ok(format!("{note} (some shards had not applied it after 5 s)"));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(note)
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
                            Ok(note) => {
                                tracing::info!(%note, "reloaded the configuration");
                                if note.is_empty() {
                                    eprintln!("sluice: reloaded");
                                } else {
                                    eprintln!("sluice: reloaded; {note}");
                                }
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
