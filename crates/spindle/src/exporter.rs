//! Item exporters: JSON lines, JSON and CSV, chosen by file extension.
//!
//! Each exporter keeps its file valid at every flush, so a crawl that is
//! interrupted leaves a file that parses: JSON lines end on a whole line,
//! the JSON array is closed after every batch (and reopened by seeking back
//! over the closing bracket), CSV ends on a whole row.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
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
    /// On failure (a full disk) the file is cut back to its last valid state,
    /// so it still ends on a whole record.
    fn flush(&mut self) -> io::Result<()>;
    /// Where the next item would start: the length a resumed job cuts the
    /// file back to (for JSON, before the closing bracket). 0 for outputs
    /// that cannot be cut back, such as standard output.
    fn position(&self) -> u64 {
        0
    }
    /// Makes what was flushed durable (fsync), before a job records it as written.
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
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

/// How an existing output file is treated, as Scrapy's `-o` and `-O`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OpenMode {
    /// Start the file afresh (`-O`).
    Overwrite,
    /// Add to what the file holds (`-o`): lines and rows go at its end, and a
    /// JSON array is reopened before its closing bracket, so it stays one array.
    Append,
    /// Cut the file back to this length and go on from there: what a resumed
    /// job does with the length it last recorded.
    ResumeAt(u64),
}

/// Opens `path` for the format, starting it afresh; `csv_fields` fixes the
/// CSV columns (else the first item's keys).
pub fn open(
    path: &Path,
    format: Format,
    csv_fields: Option<Vec<String>>,
) -> io::Result<Box<dyn ItemExporter>> {
    open_with(path, format, csv_fields, OpenMode::Overwrite)
}

/// Opens `path` for the format as `mode` says.
pub fn open_with(
    path: &Path,
    format: Format,
    csv_fields: Option<Vec<String>>,
    mode: OpenMode,
) -> io::Result<Box<dyn ItemExporter>> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(mode == OpenMode::Overwrite)
        .open(path)?;
    let len = file.metadata()?.len();
    let at = match mode {
        OpenMode::Overwrite => 0,
        OpenMode::Append => len,
        OpenMode::ResumeAt(at) if at > len => {
            return Err(io::Error::other(format!(
                "{} holds {len} bytes, fewer than the {at} its job recorded: was it changed \
                 since? Restore it, or start a new job",
                path.display()
            )))
        }
        OpenMode::ResumeAt(at) => {
            file.set_len(at)?;
            at
        }
    };
    let resumed = matches!(mode, OpenMode::ResumeAt(_));
    Ok(match format {
        Format::JsonLines => Box::new(JsonLines {
            out: Out::new(file, at),
        }),
        Format::Json => Box::new(JsonArray::open(file, at, resumed)?),
        Format::Csv => {
            let mut fields = csv_fields;
            if at > 0 && fields.is_none() {
                // Go on under the columns the file already has.
                file.seek(SeekFrom::Start(0))?;
                let mut reader = csv::Reader::from_reader(io::Read::take(&mut file, at));
                fields = Some(reader.headers()?.iter().map(str::to_string).collect());
            }
            Box::new(Csv {
                out: Out::new(file, at),
                fields,
                header_written: at > 0,
            })
        }
    })
}

/// A file written in whole batches at a known position: what is in it up to
/// `end` is whole records; a batch that fails to be written is cut off again.
struct Out {
    file: File,
    /// The length of the whole records written (for JSON, before the tail).
    end: u64,
    buf: Vec<u8>,
}

impl Out {
    fn new(file: File, end: u64) -> Self {
        Out {
            file,
            end,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    /// Writes the buffered records at `end`, then `tail` after them. If that
    /// fails, the file is cut back to its last valid state.
    fn write(&mut self, tail: &[u8]) -> io::Result<()> {
        // The file only grows on success (the new records cover the old
        // tail), so no truncation is needed here.
        let written = self.file.write_all_at(&self.buf, self.end).and_then(|()| {
            self.file
                .write_all_at(tail, self.end + self.buf.len() as u64)
        });
        match written {
            Ok(()) => {
                self.end += self.buf.len() as u64;
                self.buf.clear();
                Ok(())
            }
            Err(error) => {
                self.buf.clear();
                // Shrinking needs no space, and the old tail fitted before.
                let _ = self.file.set_len(self.end);
                let _ = self.file.write_all_at(tail, self.end);
                Err(error)
            }
        }
    }

    fn position(&self) -> u64 {
        self.end + self.buf.len() as u64
    }
}

struct JsonLines {
    out: Out,
}

impl ItemExporter for JsonLines {
    fn export(&mut self, item: &Item) -> io::Result<()> {
        serde_json::to_writer(&mut self.out.buf, item)?;
        self.out.buf.push(b'\n');
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.write(b"")
    }
    fn position(&self) -> u64 {
        self.out.position()
    }
    fn sync(&mut self) -> io::Result<()> {
        self.out.file.sync_data()
    }
}

/// JSON lines on standard output (`-o -`), one item a line.
pub fn stdout_json_lines() -> Box<dyn ItemExporter> {
    Box::new(StdoutLines {
        out: io::BufWriter::new(io::stdout()),
    })
}

struct StdoutLines<W: Write> {
    out: W,
}

impl<W: Write + Send> ItemExporter for StdoutLines<W> {
    fn export(&mut self, item: &Item) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, item)?;
        self.out.write_all(b"\n")
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

const JSON_TAIL: &[u8] = b"\n]\n";

struct JsonArray {
    out: Out,
    count: u64,
    tail_written: bool,
}

impl JsonArray {
    /// `at` bytes of the file are kept: a whole array (appending) or, for a
    /// resumed job, an array's opening up to its last item, without the tail.
    fn open(mut file: File, at: u64, resumed: bool) -> io::Result<Self> {
        if at == 0 {
            let mut out = Out::new(file, 0);
            out.buf.push(b'[');
            return Ok(JsonArray {
                out,
                count: 0,
                tail_written: false,
            });
        }
        let (end, last) = if resumed {
            (at, last_byte_before(&mut file, at)?)
        } else {
            // Appending: reopen the array before its closing bracket.
            let close = at - trailing_whitespace(&mut file, at)?;
            if close == 0 || byte_at(&mut file, close - 1)? != b']' {
                return Err(io::Error::other(
                    "the output file does not end with a JSON array; use -O to overwrite it",
                ));
            }
            let end = (close - 1) - trailing_whitespace(&mut file, close - 1)?;
            (end, last_byte_before(&mut file, end)?)
        };
        Ok(JsonArray {
            out: Out::new(file, end),
            count: u64::from(last != Some(b'[')),
            tail_written: !resumed,
        })
    }
}

fn byte_at(file: &mut File, pos: u64) -> io::Result<u8> {
    let mut b = [0u8];
    file.read_exact_at(&mut b, pos)?;
    Ok(b[0])
}

fn last_byte_before(file: &mut File, pos: u64) -> io::Result<Option<u8>> {
    if pos == 0 {
        return Ok(None);
    }
    byte_at(file, pos - 1).map(Some)
}

/// How many whitespace bytes end the first `len` bytes of the file.
fn trailing_whitespace(file: &mut File, len: u64) -> io::Result<u64> {
    let mut n = 0;
    while n < len && byte_at(file, len - n - 1)?.is_ascii_whitespace() {
        n += 1;
    }
    Ok(n)
}

impl ItemExporter for JsonArray {
    fn export(&mut self, item: &Item) -> io::Result<()> {
        self.out
            .buf
            .extend_from_slice(if self.count == 0 { b"\n" } else { b",\n" });
        serde_json::to_writer(&mut self.out.buf, item)?;
        self.count += 1;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.out.buf.is_empty() && self.tail_written {
            return Ok(());
        }
        self.out.write(JSON_TAIL)?;
        self.tail_written = true;
        Ok(())
    }
    fn position(&self) -> u64 {
        self.out.position()
    }
    fn sync(&mut self) -> io::Result<()> {
        self.out.file.sync_data()
    }
}

struct Csv {
    out: Out,
    fields: Option<Vec<String>>,
    header_written: bool,
}

impl ItemExporter for Csv {
    fn export(&mut self, item: &Item) -> io::Result<()> {
        let fields = self
            .fields
            .get_or_insert_with(|| item.keys().cloned().collect());
        // A csv writer over our buffer for this row only, so that the
        // buffer holds whole rows and a failed flush can be cut back.
        let mut rows = csv::WriterBuilder::new()
            .buffer_capacity(1024)
            .from_writer(&mut self.out.buf);
        if !self.header_written {
            rows.write_record(fields.iter())?;
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
        rows.write_record(row)?;
        rows.flush()?;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.write(b"")
    }
    fn position(&self) -> u64 {
        self.out.position()
    }
    fn sync(&mut self) -> io::Result<()> {
        self.out.file.sync_data()
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

    fn read_back(format: Format, path: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap();
        match format {
            Format::JsonLines => text
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()["url"].to_string())
                .collect(),
            Format::Json => serde_json::from_str::<Value>(&text)
                .unwrap()
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["url"].to_string())
                .collect(),
            Format::Csv => {
                let mut r = csv::Reader::from_reader(text.as_bytes());
                assert_eq!(r.headers().unwrap().iter().next(), Some("url"));
                r.records()
                    .map(|r| format!("\"{}\"", &r.unwrap()[0]))
                    .collect()
            }
        }
    }

    const FORMATS: [(Format, &str); 3] = [
        (Format::JsonLines, "jsonl"),
        (Format::Json, "json"),
        (Format::Csv, "csv"),
    ];

    #[test]
    fn append_adds_to_the_file_and_overwrite_replaces_it() {
        for (format, ext) in FORMATS {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(format!("out.{ext}"));
            for (mode, n) in [(OpenMode::Append, 2), (OpenMode::Append, 3)] {
                let mut e = open_with(&path, format, None, mode).unwrap();
                for i in 0..n {
                    e.export(&item(i)).unwrap();
                }
                e.flush().unwrap();
            }
            // One JSON array, one CSV header: the file reads as one output.
            assert_eq!(read_back(format, &path).len(), 5, "{ext}");
            let mut e = open_with(&path, format, None, OpenMode::Overwrite).unwrap();
            e.export(&item(9)).unwrap();
            e.flush().unwrap();
            assert_eq!(read_back(format, &path), ["\"http://e/9\""], "{ext}");
            // Appending to an empty array keeps it one array.
            std::fs::write(&path, "[\n]\n").unwrap();
            if format == Format::Json {
                let mut e = open_with(&path, format, None, OpenMode::Append).unwrap();
                e.export(&item(1)).unwrap();
                e.flush().unwrap();
                assert_eq!(read_back(format, &path).len(), 1);
            }
        }
    }

    #[test]
    fn resume_cuts_back_to_the_recorded_position() {
        for (format, ext) in FORMATS {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(format!("out.{ext}"));
            let mut e = open(&path, format, None).unwrap();
            let at_start = e.position();
            e.export(&item(0)).unwrap();
            e.export(&item(1)).unwrap();
            let recorded = e.position();
            e.flush().unwrap();
            assert_eq!(e.position(), recorded);
            // Written and flushed, but never recorded: a crash here.
            e.export(&item(2)).unwrap();
            e.flush().unwrap();
            drop(e);
            let mut e = open_with(&path, format, None, OpenMode::ResumeAt(recorded)).unwrap();
            e.flush().unwrap();
            assert_eq!(read_back(format, &path).len(), 2, "{ext}");
            e.export(&item(3)).unwrap();
            e.flush().unwrap();
            let urls = read_back(format, &path);
            assert_eq!(urls.len(), 3, "{ext}");
            assert_eq!(urls[2], "\"http://e/3\"", "{ext}");
            // Back to the start: an output with nothing recorded yet.
            drop(e);
            let mut e = open_with(&path, format, None, OpenMode::ResumeAt(at_start)).unwrap();
            e.flush().unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.is_empty() || read_back(format, &path).is_empty(),
                "{ext}"
            );
            // A file shorter than the job recorded was changed behind its back.
            drop(e);
            std::fs::write(&path, "").unwrap();
            assert!(open_with(&path, format, None, OpenMode::ResumeAt(recorded)).is_err());
        }
    }

    #[test]
    fn appending_to_something_else_than_an_array_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        std::fs::write(&path, "{\"a\": 1}\n").unwrap();
        assert!(open_with(&path, Format::Json, None, OpenMode::Append).is_err());
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
