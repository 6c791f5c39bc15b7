//! `spindle export` and `spindle job status -s REDIS_URL=...`: a distributed job, read from Redis.

use anyhow::Context;

use crate::args::ExportArgs;
use crate::crawl::load_settings;
use crate::Failure;

/// REDIS_URL and JOB_NAME from `-s` assignments, checked.
fn job(assignments: &[String]) -> Result<(String, String), Failure> {
    let (settings, _) = load_settings(None, assignments).map_err(Failure::Usage)?;
    match settings.distributed() {
        Ok(Some((url, job))) => Ok((url.to_string(), job.to_string())),
        Ok(None) => Err(Failure::Usage(anyhow::anyhow!(
            "name the distributed job: -s REDIS_URL=redis://HOST:PORT/DB -s JOB_NAME=NAME"
        ))),
        Err(e) => Err(Failure::Usage(e.into())),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.into()))
}

/// `spindle export -s REDIS_URL=... -s JOB_NAME=... -o FILE`.
pub fn export(args: &ExportArgs) -> Result<(), Failure> {
    let (url, name) = job(&args.settings)?;
    let n = runtime()?
        .block_on(spindle::distributed::export(&url, &name, &args.output))
        .with_context(|| format!("exporting job {name}"))
        .map_err(Failure::Runtime)?;
    eprintln!("{n} items written to {}", args.output.display());
    Ok(())
}

/// `spindle job status -s REDIS_URL=... -s JOB_NAME=...`.
pub fn status(assignments: &[String], json: bool) -> Result<(), Failure> {
    let (url, name) = job(assignments)?;
    let status = runtime()?
        .block_on(spindle::distributed::status(&url, &name))
        .with_context(|| format!("reading job {name}"))
        .map_err(Failure::Runtime)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("serializes")
        );
        return Ok(());
    }
    println!("job {} in {url}", status.job);
    println!(
        "  {}",
        if status.is_finished() {
            "finished"
        } else {
            "not finished"
        }
    );
    println!("  pages done   {}", status.pages);
    println!("  items        {}", status.items);
    println!("  queued       {}", status.queued);
    println!("  leased       {}", status.leases);
    println!("  seen         {}", status.seen);
    println!("  taken back   {}", status.reaped);
    println!("  workers      {}", status.workers.len());
    for (worker, ago) in &status.workers {
        println!("    {worker}  last heard {ago:.1} s ago");
    }
    if !status.slots.is_empty() {
        println!("  slots (waiting, in flight)");
        for (slot, waiting, inflight) in &status.slots {
            println!("    {slot}  {waiting}  {inflight}");
        }
    }
    Ok(())
}
