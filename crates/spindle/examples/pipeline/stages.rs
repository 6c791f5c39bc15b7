//! Item pipelines: clean every item, drop the ones you do not want, and drop
//! duplicates by a field, as Scrapy's `ITEM_PIPELINES` do.
//!
//! ```text
//! cargo run -p spindle --example pipeline            # crawls a demo shop it serves itself
//! ```
//!
//! It crawls the shop's JSON API with a spider that, like a site listing a
//! product under two categories, yields every product twice. Then:
//! 1. drops products whose id is odd (`item_dropped_reasons_count/odd id`);
//! 2. adds a `slug` field;
//! 3. drops the second copy of every product (`DedupPipeline` on `id`).

use spindle::pipeline::{pipeline_fn, PipelineError};
use spindle::{Crawler, DedupPipeline, Output, Request, Response, Spider, SpiderError};

/// The JSON API spider, yielding every item twice.
pub struct Twice(pub crate::json_api::ApiSpider);

impl Spider for Twice {
    fn start_requests(&self) -> Vec<Request> {
        self.0.start_requests()
    }

    fn parse(&self, response: &Response) -> Result<Output, SpiderError> {
        let mut out = self.0.parse(response)?;
        out.items.extend(out.items.clone());
        Ok(out)
    }
}

/// The pipeline stages, in order.
pub fn stages(crawler: Crawler) -> Crawler {
    crawler
        .pipeline(pipeline_fn(|item| {
            let odd = item
                .get("id")
                .and_then(|v| v.as_u64())
                .is_some_and(|id| id % 2 == 1);
            if odd {
                return Err(PipelineError::Drop("odd id".into()));
            }
            Ok(item)
        }))
        .pipeline(pipeline_fn(|mut item| {
            let slug = item
                .get("name")
                .and_then(|v| v.as_str())
                .map(|n| n.to_lowercase().replace(' ', "-"));
            if let Some(slug) = slug {
                item.insert("slug".into(), slug.into());
            }
            Ok(item)
        }))
        .pipeline(DedupPipeline::new("id"))
}
