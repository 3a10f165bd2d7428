//! The thread-per-core runtime: one pinned glommio executor per configured
//! core, each with its own listeners, its own [`Shard`], and a full mesh of
//! bounded channels to every other core.
//!
//! The main thread only builds sockets and shared configuration, then
//! handles signals; everything on the mail path runs on the executors.

pub mod control;
mod core;
mod recovery;
mod shared;

pub use self::core::{Core, SessionGuard};
pub use control::ControlHandle;
pub use shared::Shared;

use crate::config::Config;
use crate::notify::{self, Liveness, Notifier};
use crate::shard::{Backlog, Batch, ShardLoad};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What a finished run accepted, summed over shards.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// Envelopes taken in by shards (a message split over two shards counts twice).
    pub envelopes: u64,
    /// Recipients taken in.
    pub recipients: u64,
    /// Recipients delivered.
    pub delivered: u64,
    /// Deferral events.
    pub deferred: u64,
    /// Recipients bounced or expired.
    pub bounced: u64,
    /// DSNs generated.
    pub dsns: u64,
    /// Outbound connections opened.
    pub connections: u64,
}

/// A started daemon: its executors, bound addresses and shared state.
pub struct Running {
    shared: Arc<Shared>,
    handles: Vec<glommio::ExecutorJoinHandle<ExitCounts>>,
    listen: Vec<SocketAddr>,
    /// Channels to every core's control task (the admin API's way in).
    control: ControlHandle,
    /// Executor heartbeats for the systemd watchdog (beating only when
    /// `$WATCHDOG_USEC` asked for one).
    liveness: Arc<Liveness>,
}

impl Running {
    /// The addresses actually bound (a configured port 0 resolved).
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// Node-wide state (loads, reload).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The cores' control channels.
    pub fn control(&self) -> &ControlHandle {
        &self.control
    }

    /// Asks every core to stop accepting and finish its sessions.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
    }

    /// Waits for every core to finish; sums what they accepted.
    pub fn wait(self) -> Result<Summary, String> {
        let mut summary = Summary::default();
        let mut failed = None;
        for h in self.handles {
            match h.join() {
                Ok(c) => {
                    summary.envelopes += c.backlog.accepted_messages;
                    summary.recipients += c.backlog.accepted_recipients;
                    summary.delivered += c.delivery.delivered;
                    summary.deferred += c.delivery.deferred;
                    summary.bounced += c.delivery.bounced + c.delivery.expired;
                    summary.dsns += c.delivery.dsns;
                    summary.connections += c.delivery.connections;
                }
                Err(e) => failed = Some(format!("an executor failed: {e}")),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }
}

/// Binds the listeners and starts one executor per configured core.
/// `config_path` is re-read by [`Shared::reload`].
pub fn start(config: Config, config_path: Option<PathBuf>) -> Result<Running, String> {
    raise_fd_limit();
    prepare_state_dir(&config.state_dir)?;
    let cpus = config.cores.resolve()?;
    let shared = Arc::new(Shared::new(config, config_path, cpus.len())?);

    // Bind every socket up front: bind errors end startup cleanly, and an
    // address with port 0 gets one port shared by all cores.
    let mut per_core: Vec<Vec<socket2::Socket>> = (0..cpus.len()).map(|_| Vec::new()).collect();
    let mut listen = Vec::new();
    for addr in &shared.config.smtp.listen {
        let mut addr: SocketAddr = *addr;
        for sockets in per_core.iter_mut() {
            let s = crate::ingress::listener::bind(addr)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            if addr.port() == 0 {
                if let Some(a) = s.local_addr().ok().and_then(|a| a.as_socket()) {
                    addr = a;
                }
            }
            sockets.push(s);
        }
        listen.push(addr);
    }

    let mesh =
        MeshBuilder::<Batch, _>::full(cpus.len(), shared.config.backpressure.channel_capacity);
    let (control, control_rx) = ControlHandle::new(cpus.len());
    let liveness = Arc::new(Liveness::new(cpus.len()));
    let beat_every = notify::watchdog_timeout().map(notify::heartbeat_period);
    let mut handles = Vec::new();
    for (i, ((cpu, sockets), calls)) in cpus.iter().zip(per_core).zip(control_rx).enumerate() {
        let shared = shared.clone();
        let mesh = mesh.clone();
        let liveness = liveness.clone();
        let h = LocalExecutorBuilder::new(Placement::Fixed(*cpu))
            .name(&format!("sluice-core{i}"))
            .spawn(move || async move {
                if let Some(every) = beat_every {
                    glommio::spawn_local(heartbeat(liveness, i, every)).detach();
                }
                self::core::run(shared, mesh, sockets, calls).await
            })
            .map_err(|e| format!("cannot start executor on CPU {cpu}: {e}"))?;
        handles.push(h);
    }
    Ok(Running {
        shared,
        handles,
        listen,
        control,
        liveness,
    })
}

/// What SIGHUP does: reopen the delivery logs and reload the reloadable
/// configuration ([`Shared::reload`]); `Ok` carries a note naming changed
/// settings that need a restart (empty when none).
pub fn reload(shared: &Shared) -> Result<String, String> {
    shared::reload(shared)
}

/// Bumps this executor's watchdog heartbeat for as long as the executor
/// runs its tasks; it ends with the executor.
async fn heartbeat(liveness: Arc<Liveness>, core: usize, every: std::time::Duration) {
    loop {
        liveness.beat(core);
        glommio::timer::sleep(every).await;
    }
}

/// Makes sure `state_dir` is a directory we can use before anything writes
/// to it: created (mode 0750, like the unit's `StateDirectoryMode`) when
/// missing, refused with its path when it is something else or cannot be
/// made. Every part of the daemon (journal, admin token, delivery log,
/// warm-up counts) then finds it in place, whatever starts first.
fn prepare_state_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("state_dir {}: not a directory", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(|e| format!("state_dir {}: cannot create it: {e}", dir.display()))?;
            eprintln!("sluice: created state_dir {} (mode 0750)", dir.display());
            Ok(())
        }
        Err(e) => Err(format!("state_dir {}: {e}", dir.display())),
    }
}

/// Runs the daemon until SIGTERM or SIGINT; SIGHUP reloads.
pub fn serve(config: Config, config_path: Option<PathBuf>) -> Result<Summary, String> {
    let running = start(config, config_path)?;
    // The admin API is bound before the ready line, like the SMTP
    // listeners: a bad address or a busy port ends startup.
    let admin = match crate::admin::start(running.shared.clone(), running.control.clone()) {
        Ok(a) => a,
        Err(e) => {
            running.stop();
            let _ = running.wait();
            return Err(e);
        }
    };
    if let Some(addr) = admin {
        tracing::info!(%addr, "admin API listening");
        eprintln!("sluice: admin listen={addr}");
    }
    let listen: Vec<String> = running.listen.iter().map(|a| a.to_string()).collect();
    // Signal handling is in place before anyone is told we are ready, so
    // a `systemctl reload` (or a script's SIGHUP) right after start cannot
    // kill us.
    let notifier = Arc::new(Notifier::from_env());
    let signals = shared::spawn_signal_thread(running.shared.clone(), notifier.clone())?;
    tracing::info!(cores = running.handles.len(), listen = %listen.join(","), "sluice ready");
    // A machine-readable line for scripts and tests that start the daemon.
    eprintln!("sluice: ready listen={}", listen.join(","));
    notifier.ready(&ready_status(&running));
    let watchdog = match notify::watchdog_timeout() {
        Some(timeout) if notifier.is_enabled() => Some(
            notify::spawn_watchdog(notifier.clone(), timeout, running.liveness.clone())
                .map_err(|e| format!("cannot start watchdog thread: {e}"))?,
        ),
        _ => None,
    };
    let summary = running.wait();
    if let Some(w) = watchdog {
        w.close();
    }
    signals.close();
    summary
}

/// `systemctl status`'s line for a running daemon.
fn ready_status(running: &Running) -> String {
    let listen: Vec<String> = running.listen.iter().map(|a| a.to_string()).collect();
    format!(
        "accepting on {} with {} cores",
        listen.join(","),
        running.handles.len()
    )
}

/// Inbound sessions each need a descriptor: take the hard limit.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// The published loads of all shards, in shard order.
pub(crate) fn new_loads(n: usize) -> Vec<Arc<ShardLoad>> {
    (0..n).map(|_| Arc::new(ShardLoad::default())).collect()
}

/// Whether a stop was requested.
pub(crate) fn stopping(shared: &Shared) -> bool {
    shared.stopping.load(Ordering::Relaxed)
}

/// A shard's counters at exit, for the summary.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ExitCounts {
    pub backlog: Backlog,
    pub delivery: crate::delivery::DeliveryCounters,
}
