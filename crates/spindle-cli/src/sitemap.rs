//! Sitemaps (sitemaps.org), as Scrapy's `SitemapSpider` reads them: `<urlset>` and
//! `<sitemapindex>` files, gzip-compressed or not, and the `Sitemap:` lines of robots.txt.
//!
//! The protocol's limits hold per file: at most 50,000 URLs (the rest are ignored, with a
//! warning) and 50 MB uncompressed (a larger file, or a gzip bomb, is refused after reading
//! at most that much). The XML reader expands no entities but XML's own five, so an entity
//! bomb ("billion laughs") is refused as an error, not expanded.

use std::io::Read;

use anyhow::bail;
use quick_xml::events::Event;
use quick_xml::Reader;
use url::Url;

/// The most URLs one sitemap file may list.
pub const MAX_URLS: usize = 50_000;
/// The largest sitemap file, uncompressed.
pub const MAX_BYTES: u64 = 50 * 1024 * 1024;

/// Why a sitemap was refused.
#[derive(Debug, thiserror::Error)]
pub enum SitemapError {
    #[error("larger than 50 MB uncompressed (the sitemaps protocol's limit)")]
    TooLarge,
    #[error("not valid gzip: {0}")]
    Gzip(std::io::Error),
    #[error("not valid XML: {0}")]
    Xml(String),
    #[error("not a sitemap: the root element is `{0}`, not `urlset` or `sitemapindex`")]
    NotSitemap(String),
}

#[derive(Debug, PartialEq, Clone, Copy)]
pub enum Kind {
    UrlSet,
    Index,
}

#[derive(Debug, PartialEq)]
pub struct Entry {
    pub loc: String,
    pub lastmod: Option<String>,
}

#[derive(Debug)]
pub struct Sitemap {
    pub kind: Kind,
    pub entries: Vec<Entry>,
    /// More than [`MAX_URLS`] entries were listed.
    pub truncated: bool,
}

/// Reads a sitemap body, gunzipping it first when it starts with gzip's magic bytes.
pub fn parse(body: &[u8]) -> Result<Sitemap, SitemapError> {
    let xml = if body.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(body)
            .take(MAX_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(SitemapError::Gzip)?;
        out
    } else {
        body.to_vec()
    };
    if xml.len() as u64 > MAX_BYTES {
        return Err(SitemapError::TooLarge);
    }
    parse_xml(&xml)
}

fn parse_xml(xml: &[u8]) -> Result<Sitemap, SitemapError> {
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut kind = None;
    let mut entries = Vec::new();
    let mut truncated = false;
    // The element whose text is being read (`loc` or `lastmod`), and the entry being built.
    let mut reading: Option<&'static str> = None;
    let mut loc: Option<String> = None;
    let mut lastmod: Option<String> = None;
    let xml_err = |e: quick_xml::Error| SitemapError::Xml(e.to_string());
    loop {
        match reader.read_event_into(&mut buf).map_err(xml_err)? {
            Event::Start(e) => {
                let name = e.local_name();
                let name = name.as_ref();
                if kind.is_none() {
                    kind = Some(match name {
                        b"urlset" => Kind::UrlSet,
                        b"sitemapindex" => Kind::Index,
                        other => {
                            return Err(SitemapError::NotSitemap(
                                String::from_utf8_lossy(other).into_owned(),
                            ))
                        }
                    });
                    continue;
                }
                reading = match name {
                    b"loc" => Some("loc"),
                    b"lastmod" => Some("lastmod"),
                    b"url" | b"sitemap" => {
                        loc = None;
                        lastmod = None;
                        None
                    }
                    _ => None,
                };
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(xml_err)?.into_owned();
                match reading {
                    Some("loc") => loc.get_or_insert_with(String::new).push_str(&text),
                    Some("lastmod") => lastmod.get_or_insert_with(String::new).push_str(&text),
                    _ => {}
                }
            }
            Event::CData(t) => {
                let text = String::from_utf8_lossy(&t).into_owned();
                if reading == Some("loc") {
                    loc.get_or_insert_with(String::new).push_str(&text);
                }
            }
            Event::End(e) => {
                let name = e.local_name();
                match name.as_ref() {
                    b"url" | b"sitemap" => {
                        if let Some(loc) = loc.take() {
                            if entries.len() == MAX_URLS {
                                truncated = true;
                                break;
                            }
                            entries.push(Entry {
                                loc,
                                lastmod: lastmod.take(),
                            });
                        }
                    }
                    _ => reading = None,
                }
            }
            Event::Empty(e) if kind.is_none() => {
                let name = e.local_name();
                return match name.as_ref() {
                    b"urlset" | b"sitemapindex" => Ok(Sitemap {
                        kind: if name.as_ref() == b"urlset" {
                            Kind::UrlSet
                        } else {
                            Kind::Index
                        },
                        entries,
                        truncated,
                    }),
                    other => Err(SitemapError::NotSitemap(
                        String::from_utf8_lossy(other).into_owned(),
                    )),
                };
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    let Some(kind) = kind else {
        return Err(SitemapError::Xml("no root element".into()));
    };
    Ok(Sitemap {
        kind,
        entries,
        truncated,
    })
}

/// The `Sitemap:` URLs of a robots.txt, joined to its URL.
pub fn robots_sitemaps(text: &str, robots_url: &Url) -> Vec<Url> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("").trim();
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case("sitemap")
                .then(|| robots_url.join(value.trim()).ok())
                .flatten()
        })
        .filter(|u| spindle::check_crawlable(u).is_ok())
        .collect()
}

/// `--sitemap-since`: a date as `YYYY-MM-DD`.
pub fn check_date(date: &str) -> anyhow::Result<()> {
    let b = date.as_bytes();
    let ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !ok {
        bail!("--sitemap-since `{date}` is not a date: give YYYY-MM-DD, for example 2024-01-31");
    }
    Ok(())
}

/// Whether a W3C `<lastmod>` (`2024`, `2024-05`, `2024-05-01`, `2024-05-01T10:00:00+00:00`)
/// is on or after `since` (`YYYY-MM-DD`), comparing the date part. A partial date counts
/// from its last day (`2024-05` is on or after `2024-05-20`).
pub fn on_or_after(lastmod: &str, since: &str) -> bool {
    let date = lastmod.trim().get(..10).unwrap_or(lastmod.trim());
    match date.len() {
        4 | 7 => date >= &since[..date.len()],
        _ => date >= since,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlset_index_gzip_and_bombs() {
        let xml =
            br#"<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
            <url><loc>http://a.test/1?x=1&amp;y=2</loc><lastmod>2024-05-01</lastmod></url>
            <url><loc> /2 </loc></url></urlset>"#;
        let map = parse(xml).unwrap();
        assert_eq!(map.kind, Kind::UrlSet);
        assert_eq!(map.entries[0].loc, "http://a.test/1?x=1&y=2");
        assert_eq!(map.entries[0].lastmod.as_deref(), Some("2024-05-01"));
        assert_eq!(map.entries.len(), 2);

        let index =
            b"<sitemapindex><sitemap><loc>http://a.test/s1.xml</loc></sitemap></sitemapindex>";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, index).unwrap();
        let map = parse(&gz.finish().unwrap()).unwrap();
        assert_eq!(map.kind, Kind::Index);
        assert_eq!(map.entries.len(), 1);

        // 51 MB of zeros, compressed to about 50 KB.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &vec![0u8; 51 << 20]).unwrap();
        assert!(matches!(
            parse(&gz.finish().unwrap()),
            Err(SitemapError::TooLarge)
        ));

        let laughs = br#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>
            <urlset><url><loc>&b;</loc></url></urlset>"#;
        assert!(parse(laughs).is_err(), "custom entities are not expanded");
        assert!(matches!(
            parse(b"<html></html>"),
            Err(SitemapError::NotSitemap(_))
        ));
    }

    #[test]
    fn caps_urls_and_reads_robots_and_dates() {
        let mut xml = String::from("<urlset>");
        for i in 0..MAX_URLS + 3 {
            xml.push_str(&format!("<url><loc>/p/{i}</loc></url>"));
        }
        xml.push_str("</urlset>");
        let map = parse(xml.as_bytes()).unwrap();
        assert_eq!(map.entries.len(), MAX_URLS);
        assert!(map.truncated);

        let robots = Url::parse("http://a.test/robots.txt").unwrap();
        let found = robots_sitemaps(
            "User-agent: *\nSitemap: /s.xml # main\nsitemap:http://b.test/x.xml\nDisallow: /",
            &robots,
        );
        let found: Vec<&str> = found.iter().map(Url::as_str).collect();
        assert_eq!(found, ["http://a.test/s.xml", "http://b.test/x.xml"]);

        assert!(on_or_after("2024-05-01T10:00:00+00:00", "2024-05-01"));
        assert!(!on_or_after("2024-04-30", "2024-05-01"));
        assert!(on_or_after("2024-05", "2024-05-20"));
        assert!(check_date("2024-13").is_err());
    }
}
