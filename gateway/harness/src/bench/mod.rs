//! `corral bench`: the gateway's speed goals measured the same way every time. It starts a real
//! `corral serve` (this binary) on 127.0.0.1 in a temp data dir and drives it with real
//! WebSocket clients and real processes; baselines (a plain PTY read loop, a bare PTY echo) run
//! in the same run so ratios compare like with like. Prints a table; `--json FILE` writes it.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

mod echo;
mod fanout;
mod holder;
mod sessions;
mod throughput;
mod ttyd;

use echo::echo;
use fanout::fanout;
use holder::holder;
use sessions::{idle, recovery, restart, soak, spawn_stop, spawn_stop_cli};
use throughput::{pipe_output, throughput};

use crate::served::Served;

/// Runs the selected scenarios (all when empty). `cli`: the command line's binary, whose calls
/// the CLI scenarios (spawn-cli, spawn-seq) time.
pub async fn run(
    only: Vec<String>,
    json_out: Option<PathBuf>,
    bytes: u64,
    workers: Option<usize>,
    cli: &std::path::Path,
) -> anyhow::Result<()> {
    let want = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let server = Served::start_with(tempfile::tempdir()?, workers).await?;
    let mut figures = Vec::new();
    if want("echo") {
        figures.extend(echo(&server).await?);
    }
    if want("throughput") {
        figures.extend(throughput(&server, bytes).await?);
    }
    if want("ttyd") {
        figures.extend(ttyd::against_ttyd(&server, bytes).await?);
    }
    if want("pipe") {
        figures.extend(pipe_output(&server, 20_000_000).await?);
    }
    if want("spawn") || want("spawn-ws") {
        figures.extend(spawn_stop(&server, 200).await?);
    }
    if want("spawn") || want("spawn-cli") {
        figures.extend(spawn_stop_cli(&server, cli, 200).await?);
    }
    if want("spawn") || want("spawn-seq") {
        figures.extend(crate::sequential::spawn_stop_sequential(&server, cli, 200, 3).await?);
    }
    if want("fanout") {
        figures.extend(fanout(&server).await?);
    }
    if want("restart") {
        figures.extend(restart(&server, 100).await?);
    }
    drop(server);
    if want("idle") {
        figures.extend(idle(1000, workers).await?);
    }
    if want("holder") {
        figures.extend(holder(bytes, workers).await?);
    }
    if want("recovery") {
        figures.extend(recovery(200, workers).await?);
    }
    // Long (about a minute per thousand sessions): only when asked for by name.
    if only.iter().any(|o| o == "soak") {
        figures.extend(soak(10_000, workers).await?);
    }
    let machine = crate::machine::Machine::probe();
    println!("{}", machine.line());
    println!("{:<58} {:>28}   goal", "figure", "result");
    for f in &figures {
        println!("{:<58} {:>28}   {}", f.name, f.value, f.goal);
    }
    if let Some(path) = json_out {
        let all: Vec<Value> = figures
            .iter()
            .map(|f| json!({"name": f.name, "value": f.json, "goal": f.goal}))
            .collect();
        let report = json!({"machine": machine.json(), "figures": all});
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}
