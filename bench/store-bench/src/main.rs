//! Push N requests of 200 bytes into a frontier keyed by (slot, sequence),
//! in group commits of BATCH, then pop them all (read the best of a slot and
//! delete it) in group commits of BATCH, for each candidate store. Every
//! commit is durable against a process kill (the OS keeps written pages),
//! the level a crawler needs: WAL + synchronous=NORMAL in SQLite,
//! Durability::Eventual in redb (with an Immediate commit every 64 batches),
//! PersistMode::Buffer in fjall.

use std::time::Instant;

use redb::ReadableTable;

const SLOTS: u64 = 100;

fn key(slot: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&slot.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn value(i: u64) -> Vec<u8> {
    let mut v = format!("https://example.com/section/{i}/page?x={i}").into_bytes();
    v.resize(200, b'.');
    v
}

fn du(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(path).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    total
}

fn report(name: &str, n: u64, push: f64, pop: f64, bytes: u64) {
    println!(
        "{name:8} push {:>9.0}/s ({push:.2} s)  pop {:>9.0}/s ({pop:.2} s)  disk after push {:.0} MB",
        n as f64 / push,
        n as f64 / pop,
        bytes as f64 / 1e6
    );
}

fn sqlite(n: u64, batch: u64) {
    let dir = tempfile::tempdir_in(".").unwrap();
    let c = rusqlite::Connection::open(dir.path().join("db")).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         CREATE TABLE q (slot INTEGER, seq INTEGER, data BLOB, PRIMARY KEY (slot, seq)) WITHOUT ROWID;",
    )
    .unwrap();
    let t = Instant::now();
    let mut c = c;
    let mut i = 0;
    while i < n {
        let tx = c.transaction().unwrap();
        {
            let mut st = tx.prepare_cached("INSERT INTO q VALUES (?1, ?2, ?3)").unwrap();
            for j in i..(i + batch).min(n) {
                st.execute(rusqlite::params![(j % SLOTS) as i64, j as i64, value(j)])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
        i += batch;
    }
    let push = t.elapsed().as_secs_f64();
    let bytes = du(dir.path());
    let t = Instant::now();
    let mut popped = 0;
    let per_slot = (batch / SLOTS).max(1);
    while popped < n {
        let tx = c.transaction().unwrap();
        {
            let mut sel = tx
                .prepare_cached("SELECT seq, data FROM q WHERE slot = ?1 ORDER BY seq LIMIT ?2")
                .unwrap();
            let mut del = tx.prepare_cached("DELETE FROM q WHERE slot = ?1 AND seq = ?2").unwrap();
            for s in 0..SLOTS {
                let rows: Vec<(i64, Vec<u8>)> = sel
                    .query_map(rusqlite::params![s as i64, per_slot as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                for (seq, _) in rows {
                    del.execute(rusqlite::params![s as i64, seq]).unwrap();
                    popped += 1;
                }
            }
        }
        tx.commit().unwrap();
    }
    report("sqlite", n, push, t.elapsed().as_secs_f64(), bytes);
}

const Q: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("q");

fn redb(n: u64, batch: u64) {
    let dir = tempfile::tempdir_in(".").unwrap();
    let db = redb::Database::create(dir.path().join("db")).unwrap();
    let t = Instant::now();
    let mut i = 0;
    let mut commits = 0u64;
    let durability = |commits: &mut u64| {
        *commits += 1;
        if *commits % 64 == 0 {
            redb::Durability::Immediate
        } else {
            redb::Durability::Eventual
        }
    };
    while i < n {
        let mut tx = db.begin_write().unwrap();
        tx.set_durability(durability(&mut commits));
        {
            let mut tbl = tx.open_table(Q).unwrap();
            for j in i..(i + batch).min(n) {
                tbl.insert(&key(j % SLOTS, j)[..], &value(j)[..]).unwrap();
            }
        }
        tx.commit().unwrap();
        i += batch;
    }
    let push = t.elapsed().as_secs_f64();
    let bytes = du(dir.path());
    let t = Instant::now();
    let mut popped = 0;
    let per_slot = (batch / SLOTS).max(1) as usize;
    while popped < n {
        let mut tx = db.begin_write().unwrap();
        tx.set_durability(durability(&mut commits));
        {
            let mut tbl = tx.open_table(Q).unwrap();
            for s in 0..SLOTS {
                let lo = key(s, 0);
                let hi = key(s, u64::MAX);
                let keys: Vec<Vec<u8>> = tbl
                    .range(&lo[..]..&hi[..])
                    .unwrap()
                    .take(per_slot)
                    .map(|r| {
                        let (k, v) = r.unwrap();
                        let _ = v.value().len();
                        k.value().to_vec()
                    })
                    .collect();
                for k in keys {
                    tbl.remove(&k[..]).unwrap();
                    popped += 1;
                }
            }
        }
        tx.commit().unwrap();
    }
    report("redb", n, push, t.elapsed().as_secs_f64(), bytes);
}

fn fjall(n: u64, batch: u64) {
    let dir = tempfile::tempdir_in(".").unwrap();
    let ks = fjall::Config::new(dir.path()).open().unwrap();
    let q = ks.open_partition("q", Default::default()).unwrap();
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        let mut b = ks.batch();
        for j in i..(i + batch).min(n) {
            b.insert(&q, key(j % SLOTS, j), value(j));
        }
        b.commit().unwrap();
        ks.persist(fjall::PersistMode::Buffer).unwrap();
        i += batch;
    }
    let push = t.elapsed().as_secs_f64();
    let bytes = du(dir.path());
    let t = Instant::now();
    let mut popped = 0;
    let per_slot = (batch / SLOTS).max(1) as usize;
    // fjall deletes are tombstones: a range scan from the slot's start walks
    // every tombstone before the first live key, so each slot keeps a cursor.
    let mut cursor = vec![0u64; SLOTS as usize];
    while popped < n {
        let mut b = ks.batch();
        for s in 0..SLOTS {
            let lo = key(s, cursor[s as usize]);
            let hi = key(s, u64::MAX);
            for kv in q.range(lo..hi).take(per_slot) {
                let (k, _v) = kv.unwrap();
                cursor[s as usize] = u64::from_be_bytes(k[8..16].try_into().unwrap()) + 1;
                b.remove(&q, k);
                popped += 1;
            }
        }
        b.commit().unwrap();
        ks.persist(fjall::PersistMode::Buffer).unwrap();
    }
    report("fjall", n, push, t.elapsed().as_secs_f64(), bytes);
}

fn main() {
    let n: u64 = std::env::args().nth(1).map_or(1_000_000, |s| s.parse().unwrap());
    let batch: u64 = std::env::args().nth(2).map_or(1000, |s| s.parse().unwrap());
    println!("{n} requests of 200 bytes, {SLOTS} slots, group commits of {batch}");
    let which = std::env::args().nth(3).unwrap_or_else(|| "all".into());
    if which == "all" || which == "sqlite" {
        sqlite(n, batch);
    }
    if which == "all" || which == "redb" {
        redb(n, batch);
    }
    if which == "all" || which == "fjall" {
        fjall(n, batch);
    }
}
