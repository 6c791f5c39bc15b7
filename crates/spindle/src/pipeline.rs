//! Item pipelines: an ordered list of stages every scraped item passes before
//! it is exported (Scrapy's `ITEM_PIPELINES`).
//!
//! A stage may change an item, drop it ([`PipelineError::Drop`], counted
//! under `item_dropped_count` and `item_dropped_reasons_count/<reason>`), or
//! fail ([`PipelineError::Failed`], logged and counted under
//! `item_pipeline/error_count`; the item is not exported). Stages that hold
//! a resource open it in [`ItemPipeline::open`] and release it in
//! [`ItemPipeline::close`]; a stage that cannot open stops the crawl before
//! anything is fetched.
//!
//! Stages run one item at a time on the crawl's item thread, in the order
//! they were added, never on the I/O threads, so a slow database write holds
//! back only the items behind it.

use std::collections::HashSet;

use crate::item::Item;

/// Why a stage did not pass an item on.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The item is dropped on purpose (Scrapy's `DropItem`); the text is the
    /// reason counted under `item_dropped_reasons_count/<reason>`.
    #[error("dropped: {0}")]
    Drop(String),
    /// The stage failed; the item is lost and the error logged.
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

/// One stage of the item pipeline.
pub trait ItemPipeline: Send {
    /// A short name for logs and errors.
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }

    /// Called once before the crawl fetches anything.
    fn open(&mut self) -> Result<(), PipelineError> {
        Ok(())
    }

    /// Passes the item on (changed or not), or says why not.
    fn process(&mut self, item: Item) -> Result<Item, PipelineError>;

    /// Called once after the last item.
    fn close(&mut self) -> Result<(), PipelineError> {
        Ok(())
    }
}

/// Drops every item whose `field` has a value already seen (Scrapy's
/// documented `DuplicatesPipeline`). Items without the field pass.
pub struct DedupPipeline {
    field: String,
    seen: HashSet<u64>,
}

impl DedupPipeline {
    /// Deduplicates on the JSON value of `field`.
    pub fn new(field: impl Into<String>) -> Self {
        DedupPipeline {
            field: field.into(),
            seen: HashSet::new(),
        }
    }
}

impl ItemPipeline for DedupPipeline {
    fn name(&self) -> &str {
        "DedupPipeline"
    }

    fn process(&mut self, item: Item) -> Result<Item, PipelineError> {
        let Some(value) = item.get(&self.field) else {
            return Ok(item);
        };
        // Hashes of the value's JSON text: 8 bytes a value, whatever its size.
        let key = xxhash_rust::xxh3::xxh3_64(value.to_string().as_bytes());
        if self.seen.insert(key) {
            Ok(item)
        } else {
            Err(PipelineError::Drop(format!("duplicate {}", self.field)))
        }
    }
}

/// A closure as a stage: `pipeline_fn(|item| …)`.
pub fn pipeline_fn<F>(f: F) -> impl ItemPipeline
where
    F: FnMut(Item) -> Result<Item, PipelineError> + Send,
{
    struct FnPipeline<F>(F);
    impl<F> ItemPipeline for FnPipeline<F>
    where
        F: FnMut(Item) -> Result<Item, PipelineError> + Send,
    {
        fn name(&self) -> &str {
            "pipeline_fn"
        }
        fn process(&mut self, item: Item) -> Result<Item, PipelineError> {
            (self.0)(item)
        }
    }
    FnPipeline(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(v: serde_json::Value) -> Item {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn dedup_drops_repeats_by_field_only() {
        let mut p = DedupPipeline::new("sku");
        assert!(p.process(item(json!({"sku": 1, "n": "a"}))).is_ok());
        assert!(p.process(item(json!({"sku": 2, "n": "a"}))).is_ok());
        let err = p.process(item(json!({"sku": 1, "n": "b"}))).unwrap_err();
        assert!(matches!(err, PipelineError::Drop(r) if r == "duplicate sku"));
        assert!(p.process(item(json!({"n": "no sku"}))).is_ok());
        assert!(p.process(item(json!({"n": "no sku"}))).is_ok());
    }
}
