//! Serves the broad-crawl test bed (`spindle_testsite::broad`) for
//! benchmarks: `broad_site HOSTS PAGES LINKS HANGING HANG_EVERY [LATENCY_MS]`.
//! Prints `dns ADDR` and `start URL`, then reads commands from stdin:
//! `served` prints the responses sent so far, `release` lets
//! `tail.broad.test/` answer; end of input stops it.

use std::io::BufRead;
use std::net::Ipv4Addr;

use spindle_testsite::broad::{BroadConfig, BroadSite};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("numbers: HOSTS PAGES LINKS HANGING HANG_EVERY")
        })
        .collect();
    let (args, latency_ms) = match args.len() {
        6 => (&args[..5], args[5]),
        _ => (&args[..], 0),
    };
    let [hosts, pages, links, hanging, hang_every] = args[..] else {
        panic!("usage: broad_site HOSTS PAGES LINKS HANGING HANG_EVERY");
    };
    let site = BroadSite::start(BroadConfig {
        hosts,
        pages,
        links,
        hanging,
        hang_every,
        good_ip: Ipv4Addr::new(127, 0, 0, 61).into(),
        hang_ip: Ipv4Addr::new(127, 0, 0, 62).into(),
        dns_ip: Ipv4Addr::new(127, 0, 0, 153).into(),
        record: false,
        latency: std::time::Duration::from_millis(latency_ms as u64),
    })
    .expect("start the broad site");
    println!("dns {}", site.dns_addr());
    println!("start {}", site.url(0, "/"));
    println!("tail {}", site.url(0, "/").replace("h0.", "tail."));
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("served") => println!("served {}", site.served()),
            Ok("release") => {
                site.release_tail();
                println!("released");
            }
            _ => {}
        }
    }
}
