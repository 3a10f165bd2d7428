//! The control plane: a local HTTP API (for `sluicectl`) and `/metrics`.
//!
//! It runs on its own thread with a small current-thread tokio runtime
//! and axum, off the cores: an operator's request or a Prometheus scrape
//! never runs on a mail-path executor except as the short call the core's
//! control task answers (`runtime::control`). Every route needs the bearer
//! token from `[admin] token_file`; `/metrics` may be opened with
//! `metrics_without_token`.

pub mod api;
pub mod auth;
mod handlers;
pub mod metrics;

use crate::runtime::{ControlHandle, Shared};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// What every handler sees.
pub(crate) struct AdminState {
    pub shared: Arc<Shared>,
    pub control: ControlHandle,
    pub token: String,
    pub started: Instant,
}

/// Binds the admin listener and starts its thread, unless `[admin]` is
/// disabled. Returns the bound address (port 0 resolved).
pub fn start(shared: Arc<Shared>, control: ControlHandle) -> Result<Option<SocketAddr>, String> {
    let cfg = shared.config.admin.clone();
    if !cfg.enabled {
        return Ok(None);
    }
    let token_path = cfg
        .token_file
        .clone()
        .unwrap_or_else(|| shared.config.state_dir.join("admin.token"));
    let token = auth::load_or_create(&token_path)?;
    let listener = std::net::TcpListener::bind(cfg.listen)
        .map_err(|e| format!("admin API: cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("admin API: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("admin API: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("admin API: cannot start its runtime: {e}"))?;
    let state = Arc::new(AdminState {
        shared,
        control,
        token,
        started: Instant::now(),
    });
    let app = handlers::router(state, cfg.metrics_without_token);
    std::thread::Builder::new()
        .name("sluice-admin".into())
        .spawn(move || {
            rt.block_on(async move {
                let served = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => axum::serve(l, app).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = served {
                    tracing::error!(error = %e, "admin API stopped");
                }
            })
        })
        .map_err(|e| format!("admin API: cannot start its thread: {e}"))?;
    Ok(Some(addr))
}
