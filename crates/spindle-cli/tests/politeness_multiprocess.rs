//! The four concurrency settings, judged from the server's records of what
//! arrived when — never from the crawler's own counters — with three worker processes (`--processes 3`): one scheduler keeps them exact.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{secs, Run};
use spindle_testsite::{max_in_flight, max_in_flight_by_ip, start_gaps, Site, TestServer};

fn crawl(server: &TestServer, args: &[&str], limit: Duration) -> Run {
    let mut args = args.to_vec();
    args.extend(["--processes", "3"]);
    let run = common::crawl(server, &args, limit);
    if run.code == 0 {
        let workers = run.stats()["workers"].as_array().map_or(0, Vec::len);
        assert!(workers >= 3, "the crawl ran in worker processes: {workers}");
    }
    run
}

include!("cases/politeness.rs");
