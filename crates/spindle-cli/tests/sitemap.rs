//! `--sitemap`: urlsets, sitemap indexes, gzip, robots.txt `Sitemap:` lines, `--sitemap-follow`,
//! `--sitemap-since`, and bombs refused.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{crawl, crawl_with, pages};
use spindle_testsite::{Site, TestServer};

const LIMIT: Duration = Duration::from_secs(60);

fn urlset(entries: &[(&str, Option<&str>)]) -> String {
    let mut xml = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">"#,
    );
    for (loc, lastmod) in entries {
        xml.push_str(&format!("<url><loc>{loc}</loc>"));
        if let Some(m) = lastmod {
            xml.push_str(&format!("<lastmod>{m}</lastmod>"));
        }
        xml.push_str("</url>");
    }
    xml.push_str("</urlset>");
    xml
}

#[test]
fn robots_sitemap_lines_urlsets_and_lastmod() {
    let site = Site::pages([
        ("/a", 200, "<p>a</p>"),
        ("/b", 200, "<p>b</p>"),
        ("/old", 200, "<p>old</p>"),
        ("/denied", 200, "<p>d</p>"),
        (
            "/sitemap.xml",
            200,
            urlset(&[
                ("/a", Some("2025-01-02")),
                ("/b", None),
                ("/old", Some("2019-05-01T10:00:00+00:00")),
                ("/denied", None),
            ])
            .as_str(),
        ),
    ])
    .robots_txt("User-agent: *\nAllow: /\nSitemap: /sitemap.xml\n");
    let server = TestServer::builder()
        .host("a.test", Ipv4Addr::new(127, 0, 0, 2), site)
        .start()
        .unwrap();
    let start = server.url("a.test", "/a");
    let run = crawl(
        &server,
        &[
            &start,
            "--sitemap",
            "robots",
            "--sitemap-since",
            "2024-01-01",
            "--deny",
            "denied",
        ],
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let fetched: BTreeSet<String> = pages(server.records())
        .into_iter()
        .map(|r| r.path)
        .collect();
    let want: BTreeSet<String> = ["/a", "/b", "/sitemap.xml"].map(String::from).into();
    assert!(fetched.is_superset(&want), "{fetched:?}");
    assert!(
        !fetched.contains("/old") && !fetched.contains("/denied"),
        "{fetched:?}"
    );
    let urls: BTreeSet<String> = run
        .items()
        .iter()
        .map(|i| i["url"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        urls,
        [server.url("a.test", "/a"), server.url("a.test", "/b")].into()
    );
    assert_eq!(run.stats()["sitemap/old_count"], 1);
}

/// A minimal HTTP/1.1 server on loopback for bodies the test site cannot hold (gzip bytes).
/// Records each path asked for.
fn raw_server(routes: Vec<(&'static str, Vec<u8>)>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let routes = Arc::new(routes);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let routes = routes.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                log.lock().unwrap().push(path.clone());
                let (status, body) = match routes.iter().find(|(p, _)| *p == path) {
                    Some((_, body)) => ("200 OK", body.clone()),
                    None => ("404 Not Found", b"no".to_vec()),
                };
                let kind = if path.ends_with(".gz") {
                    "application/x-gzip"
                } else {
                    "text/html"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body);
            });
        }
    });
    (port, seen)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

#[test]
fn index_gzip_follow_and_bombs_refused() {
    // 60 MB of spaces inside a urlset: about 60 KB compressed, refused at 50 MB.
    let mut bomb = b"<urlset>".to_vec();
    bomb.resize(60 << 20, b' ');
    bomb.extend_from_slice(b"<url><loc>/never</loc></url></urlset>");
    let index = "<sitemapindex><sitemap><loc>/s1.xml.gz</loc></sitemap>\
                 <sitemap><loc>/skipped.xml</loc></sitemap>\
                 <sitemap><loc>/bomb.xml.gz</loc></sitemap></sitemapindex>";
    let (port, seen) = raw_server(vec![
        ("/index.xml", index.as_bytes().to_vec()),
        (
            "/s1.xml.gz",
            gzip(urlset(&[("/p1", None), ("/p2", None)]).as_bytes()),
        ),
        ("/skipped.xml", urlset(&[("/p3", None)]).into_bytes()),
        ("/bomb.xml.gz", gzip(&bomb)),
        ("/p1", b"<title>1</title>".to_vec()),
        ("/p2", b"<title>2</title>".to_vec()),
    ]);
    let index_url = format!("http://127.0.0.1:{port}/index.xml");
    let run = crawl_with(
        &[],
        &[
            "--sitemap",
            &index_url,
            "--sitemap-follow",
            r"\.gz$",
            "-s",
            "ROBOTSTXT_OBEY=false",
            "--no-follow",
        ],
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        ["/bomb.xml.gz", "/index.xml", "/p1", "/p2", "/s1.xml.gz"]
    );
    let stats = run.stats();
    assert_eq!(stats["sitemap/refused_count"], 1, "{stats}");
    assert!(run.stderr.contains("larger than 50 MB"), "{}", run.stderr);
    assert_eq!(run.items().len(), 2);
}
