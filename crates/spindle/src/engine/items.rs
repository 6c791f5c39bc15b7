//! The item part: every scraped item passes the item pipelines, then the
//! exporter, on a thread of its own, which keeps the item counters.
//!
//! The thread flushes the exporter whenever it has caught up, so the output
//! file is valid and current without a flush per item.

use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use tracing::warn;

use crate::exporter::ItemExporter;
use crate::item::Item;
use crate::pipeline::{ItemPipeline, PipelineError};
use crate::stats::{Progress, Stats};

/// The engine's handle on the item thread.
pub(super) struct Items {
    tx: Option<std_mpsc::Sender<Item>>,
    thread: JoinHandle<(Stats, std::io::Result<()>)>,
}

impl Items {
    /// Starts the item thread. The pipelines are already open.
    pub(super) fn start(
        pipelines: Vec<Box<dyn ItemPipeline>>,
        exporter: Option<Box<dyn ItemExporter>>,
        progress: Arc<Progress>,
    ) -> Self {
        let (tx, rx) = std_mpsc::channel::<Item>();
        let thread = std::thread::Builder::new()
            .name("spindle-items".into())
            .spawn(move || {
                let mut part = ItemThread {
                    pipelines,
                    exporter,
                    progress,
                    stats: Stats::default(),
                };
                let result = part.run(rx);
                part.close_pipelines();
                (part.stats, result)
            })
            .expect("spawn the item thread");
        Items {
            tx: Some(tx),
            thread,
        }
    }

    /// Hands an item over; false when the item thread has stopped (its output failed).
    pub(super) fn send(&self, item: Item) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(item).is_ok())
    }

    /// Waits for every item to be written; the item counters, and whether the output held.
    pub(super) fn finish(mut self) -> (Stats, std::io::Result<()>) {
        self.tx = None;
        self.thread.join().unwrap_or_else(|_| {
            (
                Stats::default(),
                Err(std::io::Error::other("item thread panicked")),
            )
        })
    }
}

struct ItemThread {
    pipelines: Vec<Box<dyn ItemPipeline>>,
    exporter: Option<Box<dyn ItemExporter>>,
    progress: Arc<Progress>,
    stats: Stats,
}

impl ItemThread {
    fn run(&mut self, rx: std_mpsc::Receiver<Item>) -> std::io::Result<()> {
        self.flush()?;
        while let Ok(item) = rx.recv() {
            let _whole_batch = crate::exporter::lock_writes();
            self.take(item)?;
            while let Ok(item) = rx.try_recv() {
                self.take(item)?;
            }
            self.flush()?;
        }
        self.flush()
    }

    fn take(&mut self, mut item: Item) -> std::io::Result<()> {
        for stage in &mut self.pipelines {
            item = match stage.process(item) {
                Ok(item) => item,
                Err(PipelineError::Drop(reason)) => {
                    self.stats.inc("item_dropped_count");
                    self.stats
                        .inc(&format!("item_dropped_reasons_count/{reason}"));
                    return Ok(());
                }
                Err(PipelineError::Failed(error)) => {
                    warn!(pipeline = stage.name(), %error, "item pipeline failed; item lost");
                    self.stats.inc("item_pipeline/error_count");
                    return Ok(());
                }
            };
        }
        if let Some(exporter) = &mut self.exporter {
            exporter.export(&item)?;
        }
        self.stats.inc("item_scraped_count");
        self.progress
            .items
            .store(self.stats.get("item_scraped_count"), Ordering::Relaxed);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.exporter {
            Some(exporter) => exporter.flush(),
            None => Ok(()),
        }
    }

    fn close_pipelines(&mut self) {
        for stage in &mut self.pipelines {
            if let Err(error) = stage.close() {
                warn!(pipeline = stage.name(), %error, "item pipeline failed to close");
                self.stats.inc("item_pipeline/error_count");
            }
        }
    }
}
