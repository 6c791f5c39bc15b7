//! The live progress line, shown only when stderr is a terminal. Log lines
//! are printed around it rather than through it.

use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use spindle::Progress;

/// Where log lines go: straight to stderr, or above the progress line.
#[derive(Clone)]
pub struct LogWriter(pub Option<ProgressBar>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.0 {
            Some(bar) => bar.suspend(|| io::stderr().write(buf)),
            None => io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A spinner line, if stderr is a terminal.
pub fn bar_if_terminal() -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}").expect("static template"),
    );
    Some(bar)
}

/// Refreshes the bar from the engine's live counters until the crawl ends.
pub async fn drive(bar: ProgressBar, progress: Arc<Progress>) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let pages = Progress::get(&progress.pages);
        let minutes = started.elapsed().as_secs_f64() / 60.0;
        bar.set_message(format!(
            "{pages} pages ({:.0}/min), {} items, {} in flight, {} queued, {} failed",
            pages as f64 / minutes.max(1e-9),
            Progress::get(&progress.items),
            Progress::get(&progress.in_flight),
            Progress::get(&progress.queued),
            Progress::get(&progress.failed),
        ));
        bar.tick();
    }
}
