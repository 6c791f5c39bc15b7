//! `-H` headers and the cookie jar, judged from the server's records, in one
//! process and with worker processes (which get each request whole, its
//! Cookie header included, from the engine).

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use spindle_testsite::site::HTML;
use spindle_testsite::{Page, Site, TestServer};

const LIMIT: Duration = Duration::from_secs(60);

/// `/` sets a cookie and links to three pages.
fn cookie_site() -> Site {
    Site::pages(Vec::<(String, u16, String)>::new()).handler(|r| {
        let body = match r.path_only() {
            "/" => "<a href=\"/a\">a</a><a href=\"/b\">b</a><a href=\"/c\">c</a>",
            "/a" | "/b" | "/c" => "<p>page</p>",
            _ => return None,
        };
        let mut page = Page {
            status: 200,
            content_type: HTML.to_string(),
            headers: Vec::new(),
            body: body.to_string(),
        };
        if r.path_only() == "/" {
            page.headers
                .push(("Set-Cookie".into(), "visitor=v1; Path=/".into()));
        }
        Some(page)
    })
}

fn check(processes: &str) {
    let server = TestServer::builder()
        .host("jar.test", Ipv4Addr::new(127, 0, 0, 32), cookie_site())
        .start()
        .unwrap();
    let run = common::crawl(
        &server,
        &[
            &server.url("jar.test", "/"),
            "-H",
            "X-Token: abc 123",
            "-H",
            "accept-language: fr",
            "--processes",
            processes,
            "-s",
            "ROBOTSTXT_OBEY=false",
        ],
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let records = server.records();
    assert_eq!(records.len(), 4, "{records:#?}");
    for r in &records {
        assert_eq!(r.header("x-token"), Some("abc 123"), "{r:?}");
        assert_eq!(
            r.header("accept-language"),
            Some("fr"),
            "-H replaces the default"
        );
        let expect_cookie = (r.path != "/").then_some("visitor=v1");
        assert_eq!(r.header("cookie"), expect_cookie, "{r:?}");
    }
    assert_eq!(run.items().len(), 4);
}

#[test]
fn headers_and_cookies_arrive_in_one_process() {
    check("1");
}

#[test]
fn headers_and_cookies_arrive_through_worker_processes() {
    check("3");
}

#[test]
fn a_malformed_header_fails_before_any_fetch() {
    let server = TestServer::builder()
        .host("jar.test", Ipv4Addr::new(127, 0, 0, 32), cookie_site())
        .start()
        .unwrap();
    for bad in ["no colon here", "Bad Name: x"] {
        let run = common::crawl(&server, &[&server.url("jar.test", "/"), "-H", bad], LIMIT);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains("-H"), "{}", run.stderr);
    }
    assert!(server.records().is_empty());
}
