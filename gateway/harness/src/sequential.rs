//! Sequential: what a script pays per CLI call. `n` sequential `corral spawn -- cat`, then `n`
//! sequential `corral stop`, each a fresh `corral` process talking to the server over the data
//! dir's Unix socket, side by side with tmux doing the same (`tmux new-session -d` /
//! `kill-session`, on a private tmux socket) when tmux is installed; rounds alternate corral
//! and tmux so both see the same machine, and the medians are compared. Also the cost of
//! `corral --version` alone (process start and exit, no server).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use crate::JsonCalls;
use crate::figure::Figure;
use crate::served::Served;

/// Runs `program args` to completion with stdout discarded; an error if it fails.
async fn run(program: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = tokio::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await?;
    if !status.success() {
        bail!("{} {args:?} failed: {status}", program.display());
    }
    Ok(())
}

/// How long `f` took.
async fn timed(
    f: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    f.await?;
    Ok(t.elapsed())
}

/// One corral round: `n` spawns then `n` stops, one after the other; the wall time.
async fn corral_round(exe: &Path, dir: &Path, n: usize, round: usize) -> anyhow::Result<Duration> {
    let dir = dir.display().to_string();
    let t = Instant::now();
    for i in 0..n {
        let name = format!("seq-{round}-{i}");
        run(
            exe,
            &["--data-dir", &dir, "spawn", "--name", &name, "--", "cat"],
        )
        .await?;
    }
    for i in 0..n {
        let name = format!("seq-{round}-{i}");
        run(exe, &["--data-dir", &dir, "stop", &name]).await?;
    }
    Ok(t.elapsed())
}

/// One tmux round on a private socket: `n` detached sessions running `cat`, then `n` kills.
async fn tmux_round(tmux: &Path, n: usize, round: usize) -> anyhow::Result<Duration> {
    let socket = format!("corral-bench-{}-{round}", std::process::id());
    let t = Instant::now();
    for i in 0..n {
        let name = format!("seq-{i}");
        run(
            tmux,
            &["-L", &socket, "new-session", "-d", "-s", &name, "cat"],
        )
        .await?;
    }
    for i in 0..n {
        let name = format!("seq-{i}");
        run(tmux, &["-L", &socket, "kill-session", "-t", &name]).await?;
    }
    Ok(t.elapsed())
}

/// The median of some durations.
fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

/// The program `name` on PATH, if installed.
pub(crate) fn on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `rounds` alternating rounds of corral and tmux; then `corral --version` `n` times.
pub(crate) async fn spawn_stop_sequential(
    server: &Served,
    exe: &Path,
    n: usize,
    rounds: usize,
) -> anyhow::Result<Vec<Figure>> {
    let tmux = on_path("tmux");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        ours.push(corral_round(exe, server.dir(), n, round).await?);
        if let Some(tmux) = &tmux {
            theirs.push(tmux_round(tmux, n, round).await?);
        }
        for i in 0..n {
            server
                .remote
                .json("DELETE", &format!("/v1/sessions/seq-{round}-{i}"), None)
                .await?;
        }
    }
    // Interleaved, the same way: `tmux -V` beside it, and `true`, this method's floor (a
    // process that does nothing, started and reaped as these are).
    let true_bin = on_path("true");
    let (mut version, mut tmux_v, mut floor) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..n {
        version += timed(run(exe, &["--version"])).await?;
        if let Some(tmux) = &tmux {
            tmux_v += timed(run(tmux, &["-V"])).await?;
        }
        if let Some(t) = &true_bin {
            floor += timed(run(t, &[])).await?;
        }
    }
    let mean = |d: Duration| d / n as u32;
    let (version, tmux_v, floor) = (mean(version), mean(tmux_v), mean(floor));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // A figure of a program that is not installed says so.
    let shown = |bin: &Option<std::path::PathBuf>, d: Duration| match bin {
        Some(_) => format!("{:.2} ms", ms(d)),
        None => "not installed".into(),
    };
    let ours_m = median(ours.clone());
    let mut figures = Vec::new();
    let (value, ratio) = match tmux {
        Some(_) => {
            let theirs_m = median(theirs.clone());
            let ratio = ours_m.as_secs_f64() / theirs_m.as_secs_f64();
            (
                format!(
                    "{:.3}s vs tmux {:.3}s = {ratio:.2}×",
                    ours_m.as_secs_f64(),
                    theirs_m.as_secs_f64()
                ),
                Some(ratio),
            )
        }
        None => (
            format!("{:.3}s (tmux not installed)", ours_m.as_secs_f64()),
            None,
        ),
    };
    figures.push(Figure {
        name: format!("{n} spawns + {n} stops via the CLI, sequential (median of {rounds})"),
        value,
        goal: "≤ 0.5× tmux".into(),
        json: json!({
            "corral_s": ours.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
            "tmux_s": theirs.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
            "ratio": ratio,
        }),
    });
    figures.push(Figure {
        name: format!("`corral --version`, mean of {n} sequential runs; `tmux -V`; `true`"),
        value: format!(
            "{:.2} ms; {}; {}",
            ms(version),
            shown(&tmux, tmux_v),
            shown(&true_bin, floor)
        ),
        goal: "≤ 1 ms".into(),
        json: json!({"mean_ms": ms(version), "tmux_v_ms": tmux.as_ref().map(|_| ms(tmux_v)),
                     "true_ms": true_bin.as_ref().map(|_| ms(floor))}),
    });
    Ok(figures)
}
