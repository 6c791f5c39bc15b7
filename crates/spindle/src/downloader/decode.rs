//! Content codings (`gzip`, `deflate`, `br`): the body is decoded once it is
//! whole, and `DOWNLOAD_MAXSIZE` holds for the decoded size too, so a small
//! compressed bomb is refused after `max` bytes of output, not after it
//! filled the memory.

use std::io::Read;

use bytes::Bytes;
use http::header::{HeaderMap, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, RANGE};
use http::HeaderValue;

use super::DownloadError;

/// What the crawler asks for when a request does not say.
pub const ACCEPT_ENCODINGS: &str = "gzip, br, deflate";

/// Adds `Accept-Encoding` unless the request set one or asks for a range
/// (a range of a compressed body cannot be decoded alone).
pub fn ask_for_encodings(headers: &mut HeaderMap) {
    if !headers.contains_key(ACCEPT_ENCODING) && !headers.contains_key(RANGE) {
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static(ACCEPT_ENCODINGS));
    }
}

/// Decodes `body` as its `Content-Encoding` says, and drops the headers that
/// described the encoded form. `max` is `DOWNLOAD_MAXSIZE` (0: no limit).
pub fn decode(headers: &mut HeaderMap, body: Bytes, max: u64) -> Result<Bytes, DownloadError> {
    let Some(coding) = headers.get(CONTENT_ENCODING) else {
        return Ok(body);
    };
    let coding = coding
        .to_str()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if body.is_empty() {
        // A HEAD, a 204 or a 304 names the coding of a body it does not carry.
        return Ok(body);
    }
    let reader: Box<dyn Read + '_> = match coding.as_str() {
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(&body[..])),
        "br" => Box::new(brotli_decompressor::Decompressor::new(&body[..], 8192)),
        // identity, or a coding we did not ask for: pass it on as it came.
        _ => return Ok(body),
    };
    let limit = if max == 0 { u64::MAX } else { max + 1 };
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(1 << 22));
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| DownloadError::Decompression(format!("{coding}: {e}")))?;
    if max > 0 && out.len() as u64 > max {
        return Err(DownloadError::TooLarge(max));
    }
    headers.remove(CONTENT_ENCODING);
    headers.remove(CONTENT_LENGTH);
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Bytes {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap().into()
    }

    #[test]
    fn gzip_is_decoded_and_its_headers_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("31"));
        let body = decode(&mut headers, gzip(b"hello, world"), 0).unwrap();
        assert_eq!(&body[..], b"hello, world");
        assert!(headers.is_empty());
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 64_000, "{}", bomb.len());
        let err = decode(&mut headers, bomb, 1 << 20).unwrap_err();
        assert!(matches!(err, DownloadError::TooLarge(_)), "{err}");
    }

    #[test]
    fn garbage_is_a_decompression_error() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("br"));
        let err = decode(&mut headers, Bytes::from_static(b"not brotli at all"), 0).unwrap_err();
        assert!(matches!(err, DownloadError::Decompression(_)), "{err}");
    }
}
