//! The four concurrency settings, judged from the server's records of what
//! arrived when — never from the crawler's own counters — in one process.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{secs, Run};
use spindle_testsite::{max_in_flight, max_in_flight_by_ip, start_gaps, Site, TestServer};

fn crawl(server: &TestServer, args: &[&str], limit: Duration) -> Run {
    let mut args = args.to_vec();
    args.extend(["--processes", "1"]);
    common::crawl(server, &args, limit)
}

include!("cases/politeness.rs");
