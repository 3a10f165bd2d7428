//! Live progress of a run: what the injector pushed into the SUT versus
//! what came out at the sink, so a stalled SUT is visible at once. An
//! indicatif bar on a terminal, one plain line per second otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

use crate::inject::Live;
use crate::sink::SinkHandle;

/// A running display; [`RunProgress::finish`] removes it.
pub(crate) struct RunProgress {
    bar: Option<ProgressBar>,
    task: JoinHandle<()>,
}

fn line(live: &Live, sink: &SinkHandle) -> String {
    let t = sink.totals();
    format!(
        "injected {} (acked {}), sink received {} rcpts (dup {}, 4xx {}, 5xx {})",
        live.done(),
        live.accepted(),
        t.recipients_accepted,
        t.duplicates,
        t.tempfailed,
        t.permfailed
    )
}

impl RunProgress {
    /// Starts showing progress on stderr; `total` is the message count, if fixed.
    pub(crate) fn start(live: Arc<Live>, sink: SinkHandle, total: Option<u64>) -> Self {
        let started = Instant::now();
        if std::io::stderr().is_terminal() {
            let bar = total.map_or_else(ProgressBar::new_spinner, ProgressBar::new);
            if let Ok(style) =
                ProgressStyle::with_template("{elapsed_precise} [{bar:30.cyan/blue}] {msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            let shown = bar.clone();
            let task = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    // The bar tracks the sink: it fills as mail comes out.
                    shown.set_position(sink.totals().messages_accepted);
                    shown.set_message(line(&live, &sink));
                }
            });
            RunProgress {
                bar: Some(bar),
                task,
            }
        } else {
            let task = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    eprintln!(
                        "run: {:>6.1}s {}",
                        started.elapsed().as_secs_f64(),
                        line(&live, &sink)
                    );
                }
            });
            RunProgress { bar: None, task }
        }
    }

    /// Stops the display.
    pub(crate) fn finish(self) {
        self.task.abort();
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
