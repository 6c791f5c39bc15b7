//! Items: what a spider extracts, one JSON object per record.

/// An item is an ordered JSON object, so exporters keep the spider's field order.
pub type Item = serde_json::Map<String, serde_json::Value>;
