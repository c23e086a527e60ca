//! Fan-out: one session printing 10 MB/s to 1, 10 and 100 viewers.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::json;

use corral_client::Incoming;

use crate::JsonCalls;
use crate::figure::Figure;
use crate::served::Served;

/// The fan-out session: 10 MB/s on average. Every 50 ms it writes whatever is due by the clock
/// since it started (1 byte per 100 ns), so time spent writing a burst does not lower the rate
/// (a fixed "1 MB, sleep 0.1" loop wrote only 7 MB/s with 100 viewers attached).
pub(super) const FANOUT_SCRIPT: &str = "stty raw -echo; t0=$(date +%s%N); sent=0; \
    while :; do due=$(( ($(date +%s%N) - t0) / 100 )); \
    if [ $due -gt $sent ]; then head -c $((due - sent)) /dev/zero; sent=$due; fi; sleep 0.05; done";

/// One session writing 10 MB/s to 1, 10 and 100 viewers for 5 s: delivered bytes, lag
/// events and server CPU.
pub(super) async fn fanout(server: &Served) -> anyhow::Result<Vec<Figure>> {
    let r = &server.remote;
    let info = r
        .json(
            "POST",
            "/v1/sessions",
            Some(&json!({
                "argv": ["sh", "-c", FANOUT_SCRIPT],
                "name": "bench-fanout",
            })),
        )
        .await?;
    let id = info["id"].as_str().unwrap_or_default().to_string();
    let mut out = Vec::new();
    for viewers in [1usize, 10, 100] {
        let mut conns = Vec::with_capacity(viewers);
        for _ in 0..viewers {
            let mut ws = r.ws().await?;
            ws.call(json!({"type": "subscribe", "session": id})).await?;
            conns.push(ws);
        }
        let head = async || -> anyhow::Result<u64> {
            let info = r.json("GET", &format!("/v1/sessions/{id}"), None).await?;
            Ok(info["output_offset"].as_u64().unwrap_or(0))
        };
        let head0 = head().await?;
        let cpu0 = server.cpu_seconds();
        let window = Duration::from_secs(5);
        let t = Instant::now();
        let results = join_all(conns.into_iter().map(|mut ws| async move {
            let (mut got, mut lags, mut lost) = (0u64, 0u64, 0u64);
            let end = tokio::time::Instant::now() + window;
            while let Ok(m) = tokio::time::timeout_at(end, ws.next()).await {
                match m {
                    Incoming::Bin(1, _, _, b) => got += b.len() as u64,
                    Incoming::Json(v) if v["type"] == "lagged" => {
                        lags += 1;
                        let (from, to) = (v["from"].as_u64(), v["to"].as_u64());
                        lost += to.unwrap_or(0).saturating_sub(from.unwrap_or(0));
                    }
                    Incoming::Closed(_) => break,
                    _ => {}
                }
            }
            (got, lags, lost)
        }))
        .await;
        let secs = t.elapsed().as_secs_f64();
        let cpu = (server.cpu_seconds() - cpu0) / secs * 100.0;
        let produced = (head().await? - head0) as f64 / secs / 1e6;
        let total: u64 = results.iter().map(|(g, _, _)| g).sum();
        let lags: u64 = results.iter().map(|(_, l, _)| l).sum();
        let lost: u64 = results.iter().map(|(_, _, b)| b).sum();
        let lost_pct = lost as f64 * 100.0 / (total + lost).max(1) as f64;
        out.push(Figure {
            name: format!("fan-out to {viewers} viewers: session wrote; delivered, lags (bytes), server CPU"),
            value: format!("{produced:.1} MB/s; {:.1} MB/s/viewer, {lags} lags ({lost_pct:.1}%), {cpu:.0}% core", total as f64 / viewers as f64 / secs / 1e6),
            goal: "≤ 100% of a core at 100 viewers".into(),
            json: json!({"viewers": viewers, "session_mb_per_s": produced, "mb_per_s_per_viewer": total as f64 / viewers as f64 / secs / 1e6, "lag_events": lags, "lagged_bytes": lost, "server_cpu_percent": cpu}),
        });
    }
    r.json("DELETE", &format!("/v1/sessions/{id}"), None)
        .await?;
    Ok(out)
}
