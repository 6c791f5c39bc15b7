//! `--field` and `--field-all` (CSS with parsel's ::text and ::attr, XPath), and which links
//! are followed (`--follow`, `--deny`, `--deny-domain`, `--restrict-css`).

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{crawl, pages};
use serde_json::json;
use spindle_testsite::{Page, Site, TestServer};

const LIMIT: Duration = Duration::from_secs(60);

const PAGE: &str = r#"<!DOCTYPE html><html><head><title>  The   Title </title></head><body>
<h1>Hello <a href="sub/next.html">¶</a></h1>
<img src="img/logo.png"><img src="/abs.png">
<ul><li>one</li><li>two <b>bold</b></li></ul>
<p class="price" data-sku="A1">12.99</p>
</body></html>"#;

#[test]
fn fields_take_css_pseudo_elements_xpath_and_every_match() {
    let server = TestServer::builder()
        .host(
            "a.test",
            Ipv4Addr::new(127, 0, 0, 2),
            Site::pages([("/dir/", 200, PAGE)]),
        )
        .start()
        .unwrap();
    let start = server.url("a.test", "/dir/");
    let origin = server.url("a.test", "");
    let args = [
        start.as_str(),
        "--follow",
        "NOTHING",
        "-s",
        "ROBOTSTXT_OBEY=false",
        "--field",
        "whole=h1",
        "--field",
        "own=h1::text",
        "--field",
        "img=img::attr(src)",
        "--field",
        "sku=.price::attr(data-sku)",
        "--field",
        "next=//h1/a/@href",
        "--field",
        "title=normalize-space(//title)",
        "--field",
        "missing=h6::text",
        "--field-all",
        "imgs=img::attr(src)",
        "--field-all",
        "lis=li",
        "--field-all",
        "texts=//li/text()",
    ];
    let run = crawl(&server, &args, LIMIT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let items = run.items();
    assert_eq!(items.len(), 1, "{items:?}");
    let item = &items[0];
    assert_eq!(
        item["whole"], "Hello ¶",
        "no pseudo-element: the whole trimmed text"
    );
    assert_eq!(item["own"], "Hello ", "::text: the element's own text only");
    assert_eq!(item["img"], format!("{origin}/dir/img/logo.png"));
    assert_eq!(item["sku"], "A1");
    assert_eq!(item["next"], format!("{origin}/dir/sub/next.html"));
    assert_eq!(item["title"], "The Title");
    assert_eq!(item["missing"], serde_json::Value::Null);
    assert_eq!(
        item["imgs"],
        json!([
            format!("{origin}/dir/img/logo.png"),
            format!("{origin}/abs.png")
        ])
    );
    assert_eq!(item["lis"], json!(["one", "two bold"]));
    assert_eq!(item["texts"], json!(["one", "two "]));

    // CSV joins a list with commas, as Scrapy's CSV exporter does.
    let csv_path = run.path("items.csv").display().to_string();
    let mut args: Vec<&str> = args.to_vec();
    args.extend(["-o", &csv_path]);
    let run2 = crawl(&server, &args, LIMIT);
    assert_eq!(run2.code, 0, "{}", run2.stderr);
    let mut reader = csv::Reader::from_path(&csv_path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let row = reader.records().next().unwrap().unwrap();
    let lis = headers.iter().position(|h| h == "lis").unwrap();
    assert_eq!(&row[lis], "one,two bold");
}

#[test]
fn deny_deny_domain_and_restrict_css_narrow_what_is_followed() {
    // Links to the other hosts carry their ports, known once the server is up.
    let others: Arc<OnceLock<(String, String)>> = Arc::default();
    let urls = others.clone();
    let home = Site::pages([
        ("/keep/1", 200, "k"),
        ("/skip/1", 200, "s"),
        ("/keep/footer", 200, "f"),
    ])
    .handler(move |req| {
        let (b, c) = urls.get()?;
        (req.path == "/").then(|| {
            Page::new(
                "/",
                200,
                format!(
                    r#"<nav><a href="/keep/1">k</a><a href="/skip/1">s</a>
                        <a href="{b}">b</a><a href="{c}">c</a></nav>
                        <footer><a href="/keep/footer">f</a></footer>"#
                ),
            )
        })
    });
    let other = || Site::pages([("/x", 200, "x"), ("/y", 200, "y")]);
    let server = TestServer::builder()
        .host("a.test", Ipv4Addr::new(127, 0, 0, 2), home)
        .host("sub.b.test", Ipv4Addr::new(127, 0, 0, 3), other())
        .host("c.test", Ipv4Addr::new(127, 0, 0, 4), other())
        .start()
        .unwrap();
    others
        .set((server.url("sub.b.test", "/x"), server.url("c.test", "/y")))
        .unwrap();
    let start = server.url("a.test", "/");
    let run = crawl(
        &server,
        &[
            &start,
            "-s",
            "ROBOTSTXT_OBEY=false",
            "--allow-domain",
            "a.test",
            "--allow-domain",
            "b.test",
            "--allow-domain",
            "c.test",
            "--deny",
            "/skip/",
            "--deny-domain",
            "b.test",
            "--restrict-css",
            "nav",
        ],
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let fetched: BTreeSet<(String, String)> = pages(server.records())
        .into_iter()
        .map(|r| (r.host, r.path))
        .collect();
    let want: BTreeSet<(String, String)> =
        [("a.test", "/"), ("a.test", "/keep/1"), ("c.test", "/y")]
            .into_iter()
            .map(|(h, p)| (h.to_string(), p.to_string()))
            .collect();
    assert_eq!(
        fetched,
        want,
        "{}",
        std::fs::read_to_string(run.path("stats.json")).unwrap()
    );
}

#[test]
fn follow_tag_and_attr_take_links_from_other_elements() {
    let html = r#"<a href="/a">a</a><link rel="next" href="/next"><div data-url="/d"></div>"#;
    let server = TestServer::builder()
        .host(
            "a.test",
            Ipv4Addr::new(127, 0, 0, 2),
            Site::pages([("/", 200, html)]),
        )
        .start()
        .unwrap();
    let home = server.url("a.test", "/");
    let mut args = vec![
        "parse",
        home.as_str(),
        "--follow-tag",
        "link",
        "--follow-tag",
        "div",
        "--follow-attr",
        "href",
        "--follow-attr",
        "data-url",
    ];
    let resolve = server.resolve_args();
    for r in &resolve {
        args.extend(["--resolve", r.as_str()]);
    }
    let run = common::spindle(&args, LIMIT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let links: Vec<&str> = run
        .stdout
        .split("# Requests")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .collect();
    assert_eq!(
        links,
        [server.url("a.test", "/next"), server.url("a.test", "/d")]
    );
    let bad = common::spindle(&["parse", &home, "--follow-tag", "a]"], LIMIT);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("--follow-tag"), "{}", bad.stderr);
}
