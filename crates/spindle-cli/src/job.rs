//! `spindle job status DIR`: what a job holds, read from its store.

use std::path::Path;

use anyhow::Context;
use spindle::job::{DiskStore, FrontierStore};

use crate::Failure;

pub fn status(dir: &Path, json: bool) -> Result<(), Failure> {
    if !dir.join("store").exists() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "{} holds no job (no store in it); a crawl with --job {0} or -s JOBDIR={0} makes one",
            dir.display()
        )));
    }
    let report = read(dir).map_err(Failure::Runtime)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serializes")
        );
    } else {
        print!("{}", text(dir, &report));
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct Status {
    running: bool,
    #[serde(flatten)]
    state: spindle::job::JobState,
    backlog: Vec<(String, u64)>,
}

fn read(dir: &Path) -> anyhow::Result<Status> {
    match DiskStore::open(dir) {
        Ok(store) => Ok(Status {
            running: false,
            state: store.state()?,
            backlog: store.backlog()?,
        }),
        Err(spindle::job::StoreError::Busy { .. }) => {
            // A crawl holds the job: read the figures it writes at each commit.
            let text = std::fs::read(dir.join("status.json")).with_context(|| {
                format!("{} is in use and has no status.json yet", dir.display())
            })?;
            Ok(Status {
                running: true,
                state: serde_json::from_slice(&text)?,
                backlog: Vec::new(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

fn text(dir: &Path, s: &Status) -> String {
    let st = &s.state;
    let ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
        - st.last_commit;
    let mut out = format!(
        "job {}\nstate: {}\npages done: {}\nqueued: {} (requests on the wire at the last commit included)\nseen: {}\n",
        dir.display(),
        if s.running {
            "running"
        } else if st.finished {
            "finished"
        } else {
            "stopped, resumable"
        },
        st.pages_done,
        st.queued,
        st.seen,
    );
    if st.last_commit > 0.0 {
        out += &format!(
            "last commit: {ago:.1} s ago (unix time {:.3})\n",
            st.last_commit
        );
    } else {
        out += "last commit: none\n";
    }
    if let Some(len) = st.output_len {
        out += &format!("output: {len} bytes committed\n");
    }
    if s.running {
        out += "per-slot backlog: shown when the crawl is not running\n";
    } else if !s.backlog.is_empty() {
        out += "per-slot backlog:\n";
        let mut backlog = s.backlog.clone();
        backlog.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (slot, n) in backlog {
            out += &format!("  {n:>10}  {slot}\n");
        }
    }
    out
}
