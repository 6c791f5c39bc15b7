//! Integration tests: a real server, a minimal raw HTTP/1.1 client over std TcpStream.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use spindle_testsite::{max_in_flight, Record, Site, TestServer};

const TIMEOUT: Duration = Duration::from_secs(10);

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One keep-alive connection.
struct Client {
    reader: BufReader<TcpStream>,
    local: SocketAddr,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        let local = s.local_addr().unwrap();
        Client {
            reader: BufReader::new(s),
            local,
        }
    }

    fn get(&mut self, host_header: &str, target: &str) -> Resp {
        let req =
            format!("GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: raw-test\r\n\r\n");
        self.reader
            .get_mut()
            .write_all(req.as_bytes())
            .expect("write");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some("HTTP/1.1"), "status line {line:?}");
        let status: u16 = parts.next().unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            self.reader.read_line(&mut l).expect("header line");
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').expect("header");
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .expect("content-length")
            .1
            .parse()
            .unwrap();
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).expect("body");
        Resp {
            status,
            headers,
            body: String::from_utf8(body).unwrap(),
        }
    }
}

fn get(server: &TestServer, host: &str, path: &str) -> Resp {
    let addr = server.addr_of(host);
    Client::connect(addr).get(&format!("{host}:{}", addr.port()), path)
}

const IP2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const IP3: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

fn three_hosts() -> TestServer {
    TestServer::builder()
        .host(
            "a.test",
            IP2,
            Site::generated(200)
                .links_per_page(10)
                .latency(Duration::from_millis(50)),
        )
        .host("b.test", IP2, Site::generated(50))
        .host(
            "c.test",
            IP3,
            Site::generated(100).latency(Duration::from_millis(200)),
        )
        .start()
        .expect("start server")
}

/// Records arrive when the body stream ends, a hair after the client may have read it.
fn wait_records(server: &TestServer, n: usize) -> Vec<Record> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let r = server.records();
        if r.len() >= n || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn addresses_ports_and_resolve_args() {
    let server = three_hosts();
    assert_eq!(server.port_of("a.test"), server.port_of("b.test"));
    assert_eq!(server.addr_of("a.test"), server.addr_of("b.test"));
    assert_eq!(server.addr_of("a.test").ip(), IP2);
    assert_eq!(server.addr_of("c.test").ip(), IP3);
    assert_ne!(server.port_of("a.test"), 0);
    let pa = server.port_of("a.test");
    let pc = server.port_of("c.test");
    assert_eq!(server.url("a.test", "/"), format!("http://a.test:{pa}/"));
    assert_eq!(
        server.url("c.test", "/p/3"),
        format!("http://c.test:{pc}/p/3")
    );
    assert_eq!(
        server.resolve_args(),
        vec![
            format!("a.test:{pa}:127.0.0.2"),
            format!("b.test:{pa}:127.0.0.2"),
            format!("c.test:{pc}:127.0.0.3"),
        ]
    );
    assert_eq!(server.hosts(), vec!["a.test", "b.test", "c.test"]);
}

#[test]
fn routing_by_host_header_and_records() {
    let server = three_hosts();
    let addr = server.addr_of("a.test");
    let mut c = Client::connect(addr);
    let port = addr.port();

    let a = c.get(&format!("a.test:{port}"), "/p/3");
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(
        a.header("content-length").unwrap(),
        a.body.len().to_string()
    );
    assert!(a.body.contains("<title>Page 3</title>"));
    // absolute links carry this host's origin
    assert_eq!(
        Site::generated(200)
            .links_per_page(10)
            .render("/p/3", &format!("http://a.test:{port}"))
            .body,
        a.body
    );

    // Same connection (keep-alive), other host on the same address: b.test has only 50 pages.
    let b = c.get(&format!("b.test:{port}"), "/p/49?x=1");
    assert_eq!(b.status, 200);
    assert!(b.body.contains("<h1>Heading 49</h1>"));
    assert_eq!(c.get("b.test", "/p/60").status, 404);
    assert_eq!(c.get("B.Test", "/robots.txt").status, 404);

    // c.test is served on 127.0.0.3 only → 421 here, without latency.
    let wrong = c.get(&format!("c.test:{port}"), "/");
    assert_eq!(wrong.status, 421);
    let unknown = c.get("nowhere.test", "/");
    assert_eq!(unknown.status, 421);

    let recs = wait_records(&server, 6);
    assert_eq!(recs.len(), 6);
    let got: Vec<(&str, &str, u16)> = recs
        .iter()
        .map(|r| (r.host.as_str(), r.path.as_str(), r.status))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a.test", "/p/3", 200),
            ("b.test", "/p/49?x=1", 200),
            ("b.test", "/p/60", 404),
            ("b.test", "/robots.txt", 404),
            ("c.test", "/", 421),
            ("nowhere.test", "/", 421),
        ]
    );
    for r in recs.iter().filter(|r| r.status == 421) {
        // no latency for misdirected requests (c.test's would be 200 ms)
        assert!(r.end - r.start < Duration::from_millis(150), "{r:?}");
    }
    for r in &recs {
        assert_eq!(r.local_addr, addr);
        assert_eq!(r.peer_addr, c.local, "one keep-alive connection");
        assert!(r.end >= r.start);
    }
    assert_eq!(max_in_flight(&recs), 1);

    // c.test on its own address
    let c_resp = get(&server, "c.test", "/p/99");
    assert_eq!(c_resp.status, 200);
    let recs = wait_records(&server, 7);
    let last = recs
        .iter()
        .find(|r| r.host == "c.test" && r.status == 200)
        .unwrap();
    assert_eq!(last.local_addr, server.addr_of("c.test"));
    assert_eq!(last.local_addr.ip(), IP3);

    server.clear_records();
    assert!(server.records().is_empty());
}

#[test]
fn latency_is_applied_concurrently() {
    let server = TestServer::builder()
        .host(
            "a.test",
            IP2,
            Site::generated(10).latency(Duration::from_millis(50)),
        )
        .host(
            "c.test",
            IP3,
            Site::generated(10).latency(Duration::from_millis(500)),
        )
        .start()
        .unwrap();
    let before = server.now();
    // 4 concurrent requests to c.test (500 ms latency each) must overlap, not queue.
    let addr = server.addr_of("c.test");
    let clients: Vec<Client> = (0..4).map(|_| Client::connect(addr)).collect();
    let barrier = Arc::new(Barrier::new(4));
    let t = Instant::now();
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                c.get(&format!("c.test:{}", addr.port()), &format!("/p/{i}"))
                    .status
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
    let elapsed = t.elapsed();
    assert!(elapsed >= Duration::from_millis(500));
    assert!(
        elapsed < Duration::from_millis(1500),
        "latency must not serialise requests: {elapsed:?}"
    );
    assert_eq!(get(&server, "a.test", "/").status, 200);

    let recs = wait_records(&server, 5);
    assert_eq!(recs.len(), 5);
    for r in &recs {
        assert!(r.start >= before);
        let lat = if r.host == "c.test" { 500 } else { 50 };
        assert!(r.end - r.start >= Duration::from_millis(lat), "{r:?}");
        assert!(r.end - r.start < Duration::from_millis(lat + 1000), "{r:?}");
    }
    let c: Vec<&Record> = recs.iter().filter(|r| r.host == "c.test").collect();
    assert_eq!(max_in_flight(c.iter().copied()), 4);
    assert_eq!(spindle_testsite::connections(c.iter().copied()), 4);
    assert_eq!(server.accepted_connections(), 5);
}

#[test]
fn many_concurrent_keep_alive_clients() {
    let server = TestServer::builder()
        .host("a.test", IP2, Site::generated(2000).links_per_page(10))
        .start()
        .unwrap();
    let addr = server.addr_of("a.test");
    let host = format!("a.test:{}", addr.port());
    let handles: Vec<_> = (0..8)
        .map(|w| {
            let host = host.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in (w..2000).step_by(8) {
                    let r = c.get(&host, &format!("/p/{i}"));
                    assert_eq!(r.status, 200);
                    assert!(r.body.contains(&format!("<title>Page {i}</title>")));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let recs = server.records();
    assert_eq!(recs.len(), 2000);
    assert!(spindle_testsite::duplicates(&recs).is_empty());
    assert_eq!(spindle_testsite::connections(&recs), 8);
    assert!(max_in_flight(&recs) <= 8);
    assert_eq!(spindle_testsite::count_by_path(&recs).len(), 2000);
    assert!(recs.windows(2).all(|w| w[0].start <= w[1].start));
}

#[test]
fn server_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<TestServer>();
    check::<Site>();
    check::<Record>();
}

#[test]
fn generated_pages_over_http_have_the_described_links() {
    let server = TestServer::builder()
        .host(
            "a.test",
            IP2,
            Site::generated(30)
                .links_per_page(6)
                .query_variants(true)
                .extra_links(vec!["http://offsite.example/x".into()]),
        )
        .start()
        .unwrap();
    let port = server.port_of("a.test");
    let origin = format!("http://a.test:{port}");
    let addr = server.addr_of("a.test");
    let mut c = Client::connect(addr);
    let host = format!("a.test:{port}");

    let root = c.get(&host, "/");
    assert!(root.body.contains("<title>Home</title>"));
    assert!(hrefs(&root.body)
        .iter()
        .any(|h| strip(h, &origin) == "/p/0"));

    let mut forms = HashSet::new();
    for i in 0..30 {
        let page = c.get(&host, &format!("/p/{i}"));
        assert_eq!(page.status, 200);
        assert!(page
            .body
            .contains(&format!("<p class=\"price\"> {i}.99 </p>")));
        let hs = hrefs(&page.body);
        let paths: Vec<String> = hs.iter().map(|h| strip(h, &origin)).collect();
        assert!(paths.contains(&"/".to_string()), "links back to /");
        if i + 1 < 30 {
            assert!(paths.contains(&format!("/p/{}", i + 1)), "links to next");
        }
        assert!(hs.iter().any(|h| h.ends_with("?b=2&a=1")));
        assert!(hs.iter().any(|h| h.ends_with("?a=1&b=2")));
        assert_eq!(hs.last().unwrap(), "http://offsite.example/x");
        for h in &hs {
            forms.insert(if h.starts_with(&origin) {
                "absolute"
            } else if h.contains('#') {
                "fragment"
            } else if h.starts_with('/') {
                "relative"
            } else {
                "other"
            });
        }
        // query variants serve the page itself
        let q = hs.iter().find(|h| h.ends_with("?b=2&a=1")).unwrap();
        let j = q.trim_start_matches("/p/").split('?').next().unwrap();
        let qp = c.get(&host, q);
        assert!(qp.body.contains(&format!("<h1>Heading {j}</h1>")));
    }
    assert_eq!(
        forms,
        HashSet::from(["absolute", "fragment", "relative", "other"])
    );
}

#[test]
fn every_page_reachable_in_process() {
    let origin = "http://a.test:1234";
    let site = Site::generated(2000)
        .links_per_page(10)
        .query_variants(true);
    let mut seen = HashSet::from(["/".to_string()]);
    let mut queue = VecDeque::from(["/".to_string()]);
    while let Some(p) = queue.pop_front() {
        for h in site.links(&p, origin) {
            let path = strip(&h, origin);
            if !path.starts_with('/') {
                continue;
            }
            let path = path.split('?').next().unwrap().to_string();
            if seen.insert(path.clone()) {
                queue.push_back(path);
            }
        }
    }
    assert_eq!(seen.len(), 2001);
    assert_eq!(seen, site.paths().into_iter().collect());
}

#[test]
fn hand_made_pages_and_robots() {
    let server = TestServer::builder()
        .host(
            "h.test",
            IP3,
            Site::pages(vec![
                ("/", 200, "<html><a href=\"/a\">a</a></html>"),
                ("/a", 503, "busy"),
            ])
            .robots_txt("User-agent: *\nDisallow: /private\n")
            .redirect("/old", 301, "/a")
            .latency(Duration::from_millis(20)),
        )
        .start()
        .unwrap();
    let r = get(&server, "h.test", "/");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "<html><a href=\"/a\">a</a></html>")
    );
    assert_eq!(get(&server, "h.test", "/a").status, 503);
    let robots = get(&server, "h.test", "/robots.txt");
    assert_eq!(robots.status, 200);
    assert_eq!(
        robots.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let old = get(&server, "h.test", "/old");
    assert_eq!(old.status, 301);
    assert_eq!(old.header("location"), Some("/a"));
    assert_eq!(get(&server, "h.test", "/nope").status, 404);
    let recs = wait_records(&server, 5);
    assert!(recs
        .iter()
        .all(|r| r.end - r.start >= Duration::from_millis(20)));
}

#[test]
fn drop_shuts_down() {
    let server = three_hosts();
    let addr = server.addr_of("c.test");
    assert_eq!(get(&server, "c.test", "/").status, 200);
    let t = Instant::now();
    drop(server);
    assert!(t.elapsed() < Duration::from_secs(3));
    // The listener is gone.
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[test]
fn abandoned_request_is_recorded_with_status_0() {
    let server = three_hosts();
    let addr = server.addr_of("c.test");
    {
        let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(
            format!("GET /p/1 HTTP/1.1\r\nHost: c.test:{}\r\n\r\n", addr.port()).as_bytes(),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(50));
    } // closed during the 200 ms latency
    std::thread::sleep(Duration::from_millis(400));
    let recs = server.records();
    assert_eq!(recs.len(), 1, "{recs:?}");
    // hyper notices the closed connection and drops the pending response
    assert_eq!(recs[0].status, 0, "{recs:?}");
    assert!(
        recs[0].end - recs[0].start < Duration::from_millis(200),
        "{recs:?}"
    );
}

#[tokio::test]
async fn usable_from_tokio_tests() {
    let server = three_hosts();
    let addr = server.addr_of("b.test");
    let port = server.port_of("b.test");
    let status = tokio::task::spawn_blocking(move || {
        Client::connect(addr)
            .get(&format!("b.test:{port}"), "/")
            .status
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    drop(server); // dropping inside an async context must not panic
}

fn hrefs(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().replace("&amp;", "&"))
        .collect()
}

fn strip(href: &str, origin: &str) -> String {
    let h = href.split('#').next().unwrap();
    h.strip_prefix(origin).unwrap_or(h).to_string()
}
