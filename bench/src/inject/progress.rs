//! Live progress on stderr while a run is going: an indicatif bar when a
//! person is watching a terminal, one plain line per second otherwise (so
//! logs and CI output stay readable).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

use super::session::Shared;

/// A running progress display; call [`ProgressDisplay::finish`] at the end.
pub(crate) struct ProgressDisplay {
    bar: Option<ProgressBar>,
    task: JoinHandle<()>,
}

impl ProgressDisplay {
    pub(crate) fn start(shared: Arc<Shared>) -> Self {
        let started = Instant::now();
        if std::io::stderr().is_terminal() {
            let bar = match shared.limit {
                Some(n) => ProgressBar::new(n),
                None => ProgressBar::new_spinner(),
            };
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40.cyan/blue}] {pos}/{len} {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            let shown = bar.clone();
            let task = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let done = shared.progress.done();
                    let accepted = shared.progress.accepted();
                    let rate = accepted as f64 / started.elapsed().as_secs_f64().max(1e-3);
                    shown.set_position(done);
                    shown.set_message(format!("{accepted} accepted, {rate:.0} msgs/s"));
                }
            });
            ProgressDisplay {
                bar: Some(bar),
                task,
            }
        } else {
            let task = tokio::spawn(async move {
                let mut last = 0;
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let done = shared.progress.done();
                    let accepted = shared.progress.accepted();
                    eprintln!(
                        "inject: {:>6.1}s {done} done, {accepted} accepted, {} msgs/s now",
                        started.elapsed().as_secs_f64(),
                        done - last
                    );
                    last = done;
                }
            });
            ProgressDisplay { bar: None, task }
        }
    }

    pub(crate) fn finish(self) {
        self.task.abort();
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
