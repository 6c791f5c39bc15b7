//! Item exporters: JSON lines, JSON and CSV, chosen by file extension.
//!
//! Each exporter keeps its file valid at every flush, so a crawl that is
//! interrupted leaves a file that parses: JSON lines end on a whole line,
//! the JSON array is closed after every batch (and reopened by seeking back
//! over the closing bracket), CSV ends on a whole row.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use serde_json::Value;

use crate::item::Item;

/// Held by the item writer while it writes and flushes a batch. A process
/// that must exit at once (a second Ctrl-C) takes it first, so it exits
/// between batches and the file ends on a whole record.
static WRITES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes the lock the item writer holds while it writes a batch.
pub fn lock_writes() -> std::sync::MutexGuard<'static, ()> {
    WRITES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes items to an output, keeping it valid after every flush.
pub trait ItemExporter: Send {
    /// Writes one item (buffered until the next flush).
    fn export(&mut self, item: &Item) -> io::Result<()>;
    /// Makes everything exported so far reach the file, leaving it valid.
    fn flush(&mut self) -> io::Result<()>;
}

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    /// One JSON object a line.
    JsonLines,
    /// One JSON array, closed after every flush.
    Json,
    /// CSV with a header row.
    Csv,
}

impl Format {
    /// The format a file name asks for: `.jsonl`/`.jl`/`.ndjson`, `.json`, `.csv`.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "jsonl" | "jl" | "jsonlines" | "ndjson" => Some(Format::JsonLines),
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// Opens `path` for the format; `csv_fields` fixes the CSV columns (else the first item's keys).
pub fn open(
    path: &Path,
    format: Format,
    csv_fields: Option<Vec<String>>,
) -> io::Result<Box<dyn ItemExporter>> {
    let file = BufWriter::new(File::create(path)?);
    Ok(match format {
        Format::JsonLines => Box::new(JsonLines { out: file }),
        Format::Json => Box::new(JsonArray::new(file)?),
        Format::Csv => Box::new(Csv {
            out: csv::Writer::from_writer(file),
            fields: csv_fields,
            header_written: false,
        }),
    })
}

struct JsonLines<W: Write> {
    out: W,
}

impl<W: Write + Send> ItemExporter for JsonLines<W> {
    fn export(&mut self, item: &Item) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, item)?;
        self.out.write_all(b"\n")
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// JSON lines on standard output (`-o -`), one item a line.
pub fn stdout_json_lines() -> Box<dyn ItemExporter> {
    Box::new(JsonLines {
        out: io::BufWriter::new(io::stdout()),
    })
}

const JSON_TAIL: &[u8] = b"\n]\n";

struct JsonArray<W: Write + Seek> {
    out: W,
    count: u64,
    tail_written: bool,
}

impl<W: Write + Seek> JsonArray<W> {
    fn new(mut out: W) -> io::Result<Self> {
        out.write_all(b"[")?;
        Ok(JsonArray {
            out,
            count: 0,
            tail_written: false,
        })
    }
}

impl<W: Write + Seek + Send> ItemExporter for JsonArray<W> {
    fn export(&mut self, item: &Item) -> io::Result<()> {
        if self.tail_written {
            self.out
                .seek(SeekFrom::Current(-(JSON_TAIL.len() as i64)))?;
            self.tail_written = false;
        }
        self.out
            .write_all(if self.count == 0 { b"\n" } else { b",\n" })?;
        serde_json::to_writer(&mut self.out, item)?;
        self.count += 1;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        if !self.tail_written {
            self.out.write_all(JSON_TAIL)?;
            self.tail_written = true;
        }
        self.out.flush()
    }
}

struct Csv<W: Write> {
    out: csv::Writer<W>,
    fields: Option<Vec<String>>,
    header_written: bool,
}

impl<W: Write + Send> ItemExporter for Csv<W> {
    fn export(&mut self, item: &Item) -> io::Result<()> {
        let fields = self
            .fields
            .get_or_insert_with(|| item.keys().cloned().collect());
        if !self.header_written {
            self.out.write_record(fields.iter())?;
            self.header_written = true;
        }
        let row = fields.iter().map(|f| match item.get(f) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            // A list (`--field-all`) is joined with commas, as Scrapy's CSV exporter does.
            Some(Value::Array(values)) => values
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            Some(other) => other.to_string(),
        });
        self.out.write_record(row)?;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(n: u64) -> Item {
        json!({"url": format!("http://e/{n}"), "status": 200, "title": "a, \"b\""})
            .as_object()
            .unwrap()
            .clone()
    }

    fn export_all(format: Format, ext: &str, n: u64, flush_every: u64) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("out.{ext}"));
        let mut e = open(&path, format, None).unwrap();
        for i in 0..n {
            e.export(&item(i)).unwrap();
            if (i + 1) % flush_every == 0 {
                e.flush().unwrap();
                // Valid at every flush, as an interrupted crawl would leave it.
                let text = std::fs::read_to_string(&path).unwrap();
                if format == Format::Json {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(v.as_array().unwrap().len() as u64, i + 1);
                }
            }
        }
        e.flush().unwrap();
        std::fs::read_to_string(&path).unwrap()
    }

    #[test]
    fn format_by_extension() {
        assert_eq!(
            Format::from_path(Path::new("a.jsonl")),
            Some(Format::JsonLines)
        );
        assert_eq!(Format::from_path(Path::new("a.JSON")), Some(Format::Json));
        assert_eq!(Format::from_path(Path::new("a.csv")), Some(Format::Csv));
        assert_eq!(Format::from_path(Path::new("a.txt")), None);
    }

    #[test]
    fn json_array_stays_valid() {
        let text = export_all(Format::Json, "json", 7, 2);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 7);
        assert_eq!(v[6]["url"], "http://e/6");
        let empty = export_all(Format::Json, "json", 0, 1);
        assert_eq!(serde_json::from_str::<Value>(&empty).unwrap(), json!([]));
    }

    #[test]
    fn json_lines_and_csv() {
        let text = export_all(Format::JsonLines, "jsonl", 3, 1);
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        let csv = export_all(Format::Csv, "csv", 2, 1);
        let mut r = csv::Reader::from_reader(csv.as_bytes());
        assert_eq!(
            r.headers().unwrap().iter().collect::<Vec<_>>(),
            ["url", "status", "title"]
        );
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(&rows[1][2], "a, \"b\"");
    }
}
