//! Pure helpers for judging politeness from [`Record`]s.
//!
//! Every helper takes `impl IntoIterator<Item = &Record>`, so all of these work:
//!
//! ```
//! # use spindle_testsite::{Record, max_in_flight};
//! # let records: Vec<Record> = Vec::new();
//! max_in_flight(&records);                                         // &Vec<Record>
//! max_in_flight(&records[..]);                                     // &[Record]
//! max_in_flight(records.iter().filter(|r| r.host == "a.test"));    // filtered
//! let v: Vec<&Record> = records.iter().collect();
//! max_in_flight(v.iter().copied());                                // Vec<&Record>
//! ```
//!
//! Order of the input does not matter; helpers sort internally.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::Record;

/// Maximum number of simultaneously open `[start, end)` intervals.
///
/// An interval ending at the same instant another starts does not overlap it.
pub fn max_in_flight<'a>(records: impl IntoIterator<Item = &'a Record>) -> usize {
    let mut events: Vec<(Duration, i8)> = Vec::new();
    for r in records {
        // Zero-length intervals never overlap anything.
        if r.end > r.start {
            events.push((r.start, 1));
            events.push((r.end, -1));
        }
    }
    // Ends (-1) sort before starts (+1) at the same instant.
    events.sort_unstable();
    let (mut cur, mut max) = (0i64, 0i64);
    for (_, d) in events {
        cur += i64::from(d);
        max = max.max(cur);
    }
    max as usize
}

/// [`max_in_flight`] per host.
pub fn max_in_flight_by_host<'a>(
    records: impl IntoIterator<Item = &'a Record>,
) -> BTreeMap<String, usize> {
    let mut groups: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for r in records {
        groups.entry(r.host.clone()).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(k, v)| (k, max_in_flight(v)))
        .collect()
}

/// [`max_in_flight`] per server IP address (the `local_addr` IP the request came in on).
pub fn max_in_flight_by_ip<'a>(
    records: impl IntoIterator<Item = &'a Record>,
) -> BTreeMap<IpAddr, usize> {
    let mut groups: BTreeMap<IpAddr, Vec<&Record>> = BTreeMap::new();
    for r in records {
        groups.entry(r.local_addr.ip()).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(k, v)| (k, max_in_flight(v)))
        .collect()
}

/// Differences between consecutive start times (after sorting by start).
/// `n` records give `n - 1` gaps (none for fewer than two records).
pub fn start_gaps<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<Duration> {
    let mut starts: Vec<Duration> = records.into_iter().map(|r| r.start).collect();
    starts.sort_unstable();
    starts.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Normalises a request path for duplicate detection: drops the fragment and sorts
/// the query arguments (`/p/1?b=2&a=1` → `/p/1?a=1&b=2`; an empty query is dropped).
pub fn normalize_path(path: &str) -> String {
    let path = path.split('#').next().unwrap_or("");
    match path.split_once('?') {
        None => path.to_string(),
        Some((p, q)) => {
            let mut args: Vec<&str> = q.split('&').filter(|a| !a.is_empty()).collect();
            if args.is_empty() {
                return p.to_string();
            }
            args.sort_unstable();
            format!("{p}?{}", args.join("&"))
        }
    }
}

/// Number of requests per `(host, normalize_path(path))`.
pub fn count_by_path<'a>(
    records: impl IntoIterator<Item = &'a Record>,
) -> HashMap<(String, String), usize> {
    let mut m = HashMap::new();
    for r in records {
        *m.entry((r.host.clone(), normalize_path(&r.path)))
            .or_insert(0) += 1;
    }
    m
}

/// The `(host, normalised path)` pairs requested more than once, with their counts,
/// sorted. Empty means no page was fetched twice.
pub fn duplicates<'a>(
    records: impl IntoIterator<Item = &'a Record>,
) -> Vec<((String, String), usize)> {
    let mut v: Vec<_> = count_by_path(records)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    v.sort();
    v
}

/// Number of distinct TCP connections (distinct `(local_addr, peer_addr)` pairs).
pub fn connections<'a>(records: impl IntoIterator<Item = &'a Record>) -> usize {
    records
        .into_iter()
        .map(|r| (r.local_addr, r.peer_addr))
        .collect::<HashSet<(SocketAddr, SocketAddr)>>()
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn rec(host: &str, path: &str, start: u64, end: u64) -> Record {
        rec_on(host, path, start, end, "127.0.0.2:80", "127.0.0.1:5000")
    }

    fn rec_on(host: &str, path: &str, start: u64, end: u64, local: &str, peer: &str) -> Record {
        Record {
            host: host.to_string(),
            path: path.to_string(),
            local_addr: local.parse().unwrap(),
            peer_addr: peer.parse().unwrap(),
            start: ms(start),
            end: ms(end),
            status: 200,
            method: "GET".to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    #[test]
    fn in_flight_empty_and_single() {
        assert_eq!(max_in_flight(&[]), 0);
        assert_eq!(max_in_flight(&[rec("a", "/", 0, 10)]), 1);
    }

    #[test]
    fn in_flight_touching_intervals_do_not_overlap() {
        let r = [
            rec("a", "/", 0, 10),
            rec("a", "/", 10, 20),
            rec("a", "/", 20, 30),
        ];
        assert_eq!(max_in_flight(&r), 1);
        // order of input does not matter
        let r2 = [r[2].clone(), r[0].clone(), r[1].clone()];
        assert_eq!(max_in_flight(&r2), 1);
    }

    #[test]
    fn in_flight_overlaps() {
        let r = [
            rec("a", "/1", 0, 100),
            rec("a", "/2", 10, 20),
            rec("a", "/3", 15, 30), // overlaps /1 and /2 → 3
            rec("a", "/4", 30, 40), // touches /3 end → 2 (with /1)
            rec("a", "/5", 35, 50), // /1, /4, /5 → 3
            rec("a", "/6", 200, 300),
        ];
        assert_eq!(max_in_flight(&r), 3);
        assert_eq!(max_in_flight(r.iter().filter(|r| r.start >= ms(30))), 2);
        // identical intervals all overlap
        let same = [
            rec("a", "/", 5, 6),
            rec("a", "/", 5, 6),
            rec("a", "/", 5, 6),
        ];
        assert_eq!(max_in_flight(&same), 3);
        // zero-length intervals never count
        assert_eq!(
            max_in_flight(&[rec("a", "/", 5, 5), rec("a", "/", 5, 5)]),
            0
        );
    }

    #[test]
    fn in_flight_grouped() {
        let r = [
            rec_on("a", "/", 0, 10, "127.0.0.2:80", "127.0.0.1:1"),
            rec_on("b", "/", 5, 15, "127.0.0.2:80", "127.0.0.1:2"),
            rec_on("c", "/", 5, 15, "127.0.0.3:80", "127.0.0.1:3"),
            rec_on("c", "/", 6, 16, "127.0.0.3:80", "127.0.0.1:4"),
        ];
        assert_eq!(max_in_flight(&r), 4);
        let by_host = max_in_flight_by_host(&r);
        assert_eq!(by_host["a"], 1);
        assert_eq!(by_host["b"], 1);
        assert_eq!(by_host["c"], 2);
        let by_ip = max_in_flight_by_ip(&r);
        assert_eq!(by_ip[&"127.0.0.2".parse::<IpAddr>().unwrap()], 2);
        assert_eq!(by_ip[&"127.0.0.3".parse::<IpAddr>().unwrap()], 2);
        assert_eq!(connections(&r), 4);
        assert_eq!(connections(&r[..1]), 1);
    }

    #[test]
    fn gaps() {
        assert!(start_gaps(&[]).is_empty());
        assert!(start_gaps(&[rec("a", "/", 3, 4)]).is_empty());
        let r = [
            rec("a", "/", 250, 260),
            rec("a", "/", 0, 1),
            rec("a", "/", 100, 300),
        ];
        assert_eq!(start_gaps(&r), vec![ms(100), ms(150)]);
    }

    #[test]
    fn normalisation_and_duplicates() {
        assert_eq!(normalize_path("/p/1?b=2&a=1"), "/p/1?a=1&b=2");
        assert_eq!(normalize_path("/p/1?a=1&b=2#x"), "/p/1?a=1&b=2");
        assert_eq!(normalize_path("/p/1#top"), "/p/1");
        assert_eq!(normalize_path("/p/1?"), "/p/1");
        assert_eq!(normalize_path("/"), "/");
        let r = [
            rec("a", "/p/1?b=2&a=1", 0, 1),
            rec("a", "/p/1?a=1&b=2", 1, 2),
            rec("a", "/p/1", 2, 3),
            rec("b", "/p/1", 2, 3),
            rec("a", "/", 3, 4),
            rec("a", "/", 4, 5),
            rec("a", "/", 5, 6),
        ];
        let c = count_by_path(&r);
        assert_eq!(c[&("a".to_string(), "/p/1?a=1&b=2".to_string())], 2);
        assert_eq!(c[&("a".to_string(), "/p/1".to_string())], 1);
        assert_eq!(c[&("b".to_string(), "/p/1".to_string())], 1);
        assert_eq!(
            duplicates(&r),
            vec![
                (("a".to_string(), "/".to_string()), 3),
                (("a".to_string(), "/p/1?a=1&b=2".to_string()), 2)
            ]
        );
        assert!(duplicates(r.iter().filter(|r| r.host == "b")).is_empty());
    }
}
