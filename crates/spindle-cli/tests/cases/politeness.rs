// The politeness cases, shared by `politeness.rs` (one process) and
// `politeness_multiprocess.rs` (three worker processes): the same assertions
// must hold either way. The including file defines `crawl`.

const LIMIT: Duration = Duration::from_secs(60);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

#[test]
fn global_cap_holds_across_sites_and_is_reached() {
    let site = || {
        Site::generated(300)
            .links_per_page(8)
            .latency(Duration::from_millis(100))
    };
    let server = TestServer::builder()
        .host("a.test", ip(2), site())
        .host("b.test", ip(3), site())
        .host("c.test", ip(4), site())
        .host("d.test", ip(5), site())
        .start()
        .unwrap();
    let urls: Vec<String> = ["a.test", "b.test", "c.test", "d.test"]
        .iter()
        .map(|h| server.url(h, "/"))
        .collect();
    let mut args: Vec<&str> = urls.iter().map(String::as_str).collect();
    args.extend([
        "-s",
        "CONCURRENT_REQUESTS=5",
        "-s",
        "CLOSESPIDER_PAGECOUNT=80",
    ]);
    let run = crawl(&server, &args, LIMIT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let records = server.records();
    assert!(records.len() >= 80, "{} requests", records.len());
    assert_eq!(
        max_in_flight(&records),
        5,
        "the global cap is held and reached"
    );
    let hosts: std::collections::HashSet<&str> = records.iter().map(|r| r.host.as_str()).collect();
    assert_eq!(hosts.len(), 4, "every site was crawled: {hosts:?}");
}

#[test]
fn per_domain_cap_holds_and_is_reached() {
    let server = TestServer::builder()
        .host(
            "a.test",
            ip(2),
            Site::generated(300)
                .links_per_page(8)
                .latency(Duration::from_millis(100)),
        )
        .start()
        .unwrap();
    let url = server.url("a.test", "/");
    let run = crawl(
        &server,
        &[
            &url,
            "-s",
            "CONCURRENT_REQUESTS_PER_DOMAIN=3",
            "-s",
            "CLOSESPIDER_PAGECOUNT=40",
        ],
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let records = server.records();
    assert_eq!(max_in_flight(&records), 3);
    let stats = run.stats();
    assert_eq!(stats["slots"]["a.test"]["max_in_flight"], 3);
}

#[test]
fn per_ip_cap_covers_two_hosts_on_one_address_from_the_first_request() {
    let site = || {
        Site::generated(200)
            .links_per_page(8)
            .latency(Duration::from_millis(150))
    };
    let server = TestServer::builder()
        .host("a.test", ip(2), site())
        .host("b.test", ip(2), site())
        .host("c.test", ip(3), site())
        .start()
        .unwrap();
    let (a, b, c) = (
        server.url("a.test", "/"),
        server.url("b.test", "/"),
        server.url("c.test", "/"),
    );
    let run = crawl(
        &server,
        &[
            &a,
            &b,
            &c,
            "-s",
            "CONCURRENT_REQUESTS_PER_IP=2",
            "-s",
            "CLOSESPIDER_PAGECOUNT=60",
        ],
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let records = server.records();
    let by_ip = max_in_flight_by_ip(&records);
    assert_eq!(
        by_ip[&std::net::IpAddr::from(ip(2))],
        2,
        "a.test + b.test share one cap of 2: {by_ip:?}"
    );
    assert_eq!(by_ip[&std::net::IpAddr::from(ip(3))], 2);
    // Both names on the shared address were crawled, and the cap held from the very start.
    let first_two_s: Vec<_> = records
        .iter()
        .filter(|r| r.local_addr.ip() == ip(2) && r.start < Duration::from_millis(600))
        .cloned()
        .collect();
    assert!(max_in_flight(&first_two_s) <= 2);
    assert!(
        records.iter().any(|r| r.host == "a.test") && records.iter().any(|r| r.host == "b.test")
    );
    assert!(
        run.stats()["slots"]["127.0.0.2"]["requests"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn fixed_delay_spaces_request_starts() {
    let server = TestServer::builder()
        .host("a.test", ip(2), Site::generated(200).links_per_page(8))
        .start()
        .unwrap();
    let url = server.url("a.test", "/");
    let run = crawl(
        &server,
        &[
            &url,
            "-s",
            "DOWNLOAD_DELAY=0.2",
            "-s",
            "RANDOMIZE_DOWNLOAD_DELAY=false",
            "-s",
            "CLOSESPIDER_PAGECOUNT=12",
        ],
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let records = server.records();
    assert!(records.len() >= 12);
    common::assert_delay_floor(&run, "a.test", &records, Duration::from_millis(200));
    let gaps = start_gaps(&records);
    let mean = gaps.iter().map(|g| secs(*g)).sum::<f64>() / gaps.len() as f64;
    assert!(mean < 0.26, "no needless waiting: mean gap {mean}");
}

#[test]
fn randomized_delay_gaps_are_in_range_with_the_delay_as_mean() {
    let server = TestServer::builder()
        .host("a.test", ip(2), Site::generated(400).links_per_page(8))
        .start()
        .unwrap();
    let url = server.url("a.test", "/");
    let run = crawl(
        &server,
        &[
            &url,
            "-s",
            "DOWNLOAD_DELAY=0.1",
            "-s",
            "CLOSESPIDER_PAGECOUNT=81",
        ],
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let records = server.records();
    common::assert_delay_floor(&run, "a.test", &records, Duration::from_millis(50));
    let gaps: Vec<f64> = start_gaps(&records)
        .iter()
        .map(|g| secs(*g))
        .take(80)
        .collect();
    assert_eq!(gaps.len(), 80);
    let (min, max) = gaps
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), g| (lo.min(*g), hi.max(*g)));
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    // No upper bound on single gaps: a delay is a floor, and a crawler given
    // the CPU late sends late (a 0.216 s gap was seen with both cores busy).
    // Needless waiting shows in the mean instead. The gaps are uniform(0.05,
    // 0.15), so the mean is 0.1 s; the mean of 80 has a standard deviation of
    // 3.2 ms, and 0.111 is 3.4 of them above it. Scrapy's redrawing timer
    // gives ~0.122 s, which this bound rejects.
    assert!((0.09..0.111).contains(&mean), "mean gap {mean}: {gaps:?}");
    assert!(max - min > 0.05, "gaps are randomized: {min}..{max}");
}

#[test]
fn delay_does_not_collapse_concurrency_when_latency_exceeds_it() {
    let server = TestServer::builder()
        .host(
            "a.test",
            ip(2),
            Site::generated(200)
                .links_per_page(8)
                .latency(Duration::from_secs(1)),
        )
        .start()
        .unwrap();
    let url = server.url("a.test", "/");
    let run = crawl(
        &server,
        &[
            &url,
            "-s",
            "DOWNLOAD_DELAY=0.25",
            "-s",
            "RANDOMIZE_DOWNLOAD_DELAY=0",
            "-s",
            "CLOSESPIDER_PAGECOUNT=12",
        ],
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let records = server.records();
    let overlap = max_in_flight(&records);
    // latency / delay = 4 requests overlap (5 at a boundary instant), under the cap of 8.
    assert!((4..=5).contains(&overlap), "max in flight {overlap}");
    common::assert_delay_floor(&run, "a.test", &records, Duration::from_millis(250));
}

#[test]
fn a_slow_site_does_not_hold_back_a_fast_one() {
    let hub: String = (0..300)
        .map(|i| format!("<a href=\"/p/{i}\">{i}</a>"))
        .collect();
    let server = TestServer::builder()
        .host(
            "slow.test",
            ip(2),
            Site::generated(500)
                .latency(Duration::from_secs(1))
                .page("/", 200, hub),
        )
        .host("fast.test", ip(3), Site::generated(100).links_per_page(5))
        .start()
        .unwrap();
    let (slow, fast) = (server.url("slow.test", "/"), server.url("fast.test", "/"));
    // The slow site is listed first and has hundreds of pages queued after its
    // first second; the global cap of 2 is all there is to share.
    let run = crawl(
        &server,
        &[
            &slow,
            &fast,
            "-s",
            "CONCURRENT_REQUESTS=2",
            "-s",
            "CLOSESPIDER_TIMEOUT=4",
        ],
        LIMIT,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let records = server.records();
    let fast_pages: Vec<_> = records
        .iter()
        .filter(|r| r.host == "fast.test" && r.status == 200)
        .collect();
    assert_eq!(fast_pages.len(), 101, "the whole fast site was crawled");
    let done = fast_pages.iter().map(|r| r.end).max().unwrap();
    assert!(
        done < Duration::from_secs(3),
        "fast site finished at {done:?}"
    );
    let slow_queued = run.stats()["scheduler/enqueued"].as_u64().unwrap() - records.len() as u64;
    assert!(
        slow_queued > 250,
        "the slow site had {slow_queued} pages waiting"
    );
    assert!(max_in_flight(records.iter().filter(|r| r.host == "slow.test")) <= 2);
}
