//! `corral chaos`: a bounded fault-injection run against a real `corral serve` (this binary) with
//! real sessions, reporting a faults-survived table.
//!
//! Sessions: nine PTY counters (`<pid> <n>` lines every 5 ms; `always`, `on_failure` and `never`
//! policies; half of them ignore SIGHUP), one counter in pipe mode (`always`) and one input
//! sink (`cat > /dev/null`, pipe mode).
//! Faults, the first seven in a fixed order so each kind is injected at least once, then at
//! random until the time is up:
//!
//! - **child SIGKILL**: a random session's main process gets SIGKILL; `always`/`on_failure` must
//!   run again, `never` must end Stopped with the signal (it is then restarted by request);
//! - **server SIGKILL + restart**: the server is SIGKILLed and started again on its data dir;
//!   every session's main process must have survived under its holder and be running again
//!   with the same pid, whatever the policy;
//! - **torn log tail**: during such a crash, the last segment of a random session's scrollback is
//!   truncated or has a byte flipped near its end before the restart;
//! - **stalled viewer**: a client subscribes to a busy session and stops reading for 2 s; another
//!   client's ping must still be answered within 1 s, and the stalled one then gets output or an
//!   explicit `lagged`;
//! - **flapping viewer**: 30 connect / subscribe / read one frame / drop cycles;
//! - **input flood**: 8 MiB of input in 1,000 messages without waiting, to the sink;
//! - **holder SIGKILL**: a random PTY session's holder gets SIGKILL; the session must be reported
//!   lost (the reason says so), its processes gone, and `always`/`on_failure` run again, `never`
//!   end Stopped (it is then restarted by request).
//!
//! After every fault the invariants are checked (each may take a few seconds to settle): the
//! server answers; **no orphan** (every live process carrying a `CORRAL_SESSION_ID` belongs to a
//! listed session that is not Stopped/Failed, and every holder process of the data dir to a
//! running session); **no zombie** child of the server; **registry
//! integrity** (`PRAGMA quick_check` on a read-only connection); **bounded memory** (server RSS
//! under 512 MiB, under 4,096 fds); no viewer left behind. At the end, **no byte lost**: every
//! session's scrollback on disk has no gap, and within each process run the counters are
//! contiguous. A torn tail must come back as a prefix of what was there; a gap may start only
//! where a torn tail left a log's end (the damage reached output no holder still held: the
//! session keeps its process and records the loss).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use corral_actors::persist::{Chunk, LogReader};
use corral_actors::process::procfs::{self, ProcessIdentity};
use serde_json::{Value, json};

use corral_client::Incoming;

use crate::JsonCalls;
use crate::served::Served;

/// Fault kinds, in the order of the first round.
const FAULTS: [&str; 7] = [
    "child SIGKILL",
    "server SIGKILL + restart",
    "torn log tail",
    "stalled viewer",
    "flapping viewer",
    "input flood",
    "holder SIGKILL",
];

/// How long an invariant may take to settle after a fault.
const SETTLE: Duration = Duration::from_secs(8);

/// One row of the table.
#[derive(Default, Clone, Copy)]
struct Tally {
    injected: u64,
    survived: u64,
}

struct Chaos {
    /// The server (None only while it is down).
    server: Option<Served>,
    rng: fastrand::Rng,
    /// Session id → restart policy.
    policies: HashMap<String, String>,
    /// The input sink's id.
    sink: String,
    /// Per fault kind.
    tally: [Tally; FAULTS.len()],
    /// Invariant violations, in words.
    failures: Vec<String>,
    /// Invariant checks run.
    checks: u64,
    /// Session id → where its log ended after each torn tail: a gap may start there (the
    /// damage reached output no holder held any more) and nowhere else.
    damaged: HashMap<String, Vec<u64>>,
}

/// Runs the chaos suite for `secs` seconds; prints the table; false if an invariant broke.
pub async fn run(secs: u64, seed: Option<u64>, json_out: Option<PathBuf>) -> anyhow::Result<bool> {
    let seed = seed.unwrap_or_else(|| fastrand::u64(..));
    println!("corral chaos: {secs} s, seed {seed}");
    let server = Served::start().await?;
    let mut chaos = Chaos {
        server: Some(server),
        rng: fastrand::Rng::with_seed(seed),
        policies: HashMap::new(),
        sink: String::new(),
        tally: [Tally::default(); FAULTS.len()],
        failures: Vec::new(),
        checks: 0,
        damaged: HashMap::new(),
    };
    chaos.setup().await?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut round = 0usize;
    // The first round (every kind once) always completes, however slow the machine.
    while Instant::now() < deadline || round < FAULTS.len() {
        let kind = if round < FAULTS.len() {
            round
        } else {
            // Child kills are cheap and the most common fault in life; crashes are rarer.
            match chaos.rng.u32(0..11) {
                0..=3 => 0,
                4 => 1,
                5 => 2,
                6 => 3,
                7 => 4,
                8 => 5,
                _ => 6,
            }
        };
        round += 1;
        let before = chaos.failures.len();
        let injected = match kind {
            0 => chaos.child_kill().await?,
            1 => chaos.server_crash(false).await?,
            2 => chaos.server_crash(true).await?,
            3 => chaos.stalled_viewer().await?,
            4 => chaos.flapping_viewer().await?,
            5 => chaos.input_flood().await?,
            _ => chaos.holder_kill().await?,
        };
        if !injected {
            continue;
        }
        chaos.invariants(FAULTS[kind]).await?;
        chaos.tally[kind].injected += 1;
        if chaos.failures.len() == before {
            chaos.tally[kind].survived += 1;
        }
    }
    chaos.no_byte_lost().await?;
    println!("\n{:<28} {:>9} {:>9}", "fault", "injected", "survived");
    for (kind, t) in FAULTS.iter().zip(chaos.tally) {
        println!("{kind:<28} {:>9} {:>9}", t.injected, t.survived);
    }
    println!(
        "invariant checks: {}; violations: {}",
        chaos.checks,
        chaos.failures.len()
    );
    for f in &chaos.failures {
        println!("  VIOLATION: {f}");
    }
    if let Some(path) = json_out {
        let rows: Vec<Value> = FAULTS
            .iter()
            .zip(chaos.tally)
            .map(|(k, t)| json!({"fault": k, "injected": t.injected, "survived": t.survived}))
            .collect();
        let doc = json!({"seed": seed, "secs": secs, "faults": rows,
            "checks": chaos.checks, "violations": chaos.failures});
        std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)?;
    }
    Ok(chaos.failures.is_empty())
}

impl Chaos {
    fn server(&self) -> &Served {
        // invariant: the server is None only inside server_crash.
        self.server.as_ref().expect("server up")
    }

    async fn setup(&mut self) -> anyhow::Result<()> {
        let remote = self.server().remote.clone();
        for i in 0..9 {
            let policy = ["always", "on_failure", "never"][i % 3];
            // Some ignore SIGHUP: they outlive a dead server's terminal hang-up, so a crash leaves
            // real orphans for recovery to find.
            let trap = if i % 2 == 0 { "trap '' HUP; " } else { "" };
            let script =
                format!("{trap}i=0; while :; do i=$((i+1)); echo \"$$ $i\"; sleep 0.005; done");
            let info = remote
                .json(
                    "POST",
                    "/v1/sessions",
                    Some(&json!({
                        "name": format!("counter-{i}"),
                        "argv": ["sh", "-c", script],
                        "restart": policy,
                        "grace": {"secs": 1, "nanos": 0},
                        "backoff": {"initial": {"secs": 0, "nanos": 10_000_000},
                            "max": {"secs": 0, "nanos": 200_000_000}, "multiplier": 2.0,
                            "jitter": 0.1, "reset_after": {"secs": 5, "nanos": 0}},
                        "intensity": {"max_restarts": 1000, "period": {"secs": 1, "nanos": 0}},
                    })),
                )
                .await
                .context("spawning a counter")?;
            self.policies.insert(id_of(&info)?, policy.to_string());
        }
        // A counter on pipes: its holder reads them, so a server kill loses none of its lines
        // either.
        let script = "i=0; while :; do i=$((i+1)); echo \"$$ $i\"; sleep 0.005; done";
        let info = remote
            .json(
                "POST",
                "/v1/sessions",
                Some(
                    // The counters' generous restart intensity: a run kills it (child and
                    // holder SIGKILLs) more than 5 times a minute at times, and the default
                    // intensity then rightly fails it, which is not what is tested here.
                    &json!({"name": "counter-pipe", "argv": ["sh", "-c", script],
                    "restart": "always", "mode": "pipe",
                    "backoff": {"initial": {"secs": 0, "nanos": 10_000_000},
                        "max": {"secs": 0, "nanos": 200_000_000}, "multiplier": 2.0,
                        "jitter": 0.1, "reset_after": {"secs": 5, "nanos": 0}},
                    "intensity": {"max_restarts": 1000, "period": {"secs": 1, "nanos": 0}}}),
                ),
            )
            .await
            .context("spawning the pipe counter")?;
        self.policies.insert(id_of(&info)?, "always".to_string());
        let sink = remote
            .json(
                "POST",
                "/v1/sessions",
                Some(
                    &json!({"name": "sink", "argv": ["sh", "-c", "exec cat > /dev/null"],
                    "restart": "always", "mode": "pipe"}),
                ),
            )
            .await?;
        self.sink = id_of(&sink)?;
        self.policies.insert(self.sink.clone(), "always".into());
        Ok(())
    }

    async fn list(&self) -> anyhow::Result<Vec<Value>> {
        let v = self
            .server()
            .remote
            .json("GET", "/v1/sessions", None)
            .await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    fn fail(&mut self, after: &str, what: String) {
        eprintln!("VIOLATION after {after}: {what}");
        self.failures.push(format!("after {after}: {what}"));
    }

    // ----- faults -----

    async fn child_kill(&mut self) -> anyhow::Result<bool> {
        let list = self.list().await?;
        let running: Vec<&Value> = list
            .iter()
            .filter(|s| s["pid"].is_number() && s["id"] != json!(self.sink))
            .collect();
        if running.is_empty() {
            return Ok(false);
        }
        let s = running[self.rng.usize(..running.len())];
        let id = id_of(s)?;
        let restarts = s["restarts"].as_u64().unwrap_or(0);
        let pid = s["pid"].as_i64().unwrap_or(0) as i32;
        if let Err(e) = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        ) {
            bail!("kill {pid}: {e}");
        }
        self.settle("child SIGKILL", &id, restarts, |info| {
            info["last_exit"]["signal"] == json!(9)
        })
        .await?;
        Ok(true)
    }

    /// After a fault that ended session `id`'s process: `always`/`on_failure` must run again
    /// (restarts past `restarts`), `never` must end Stopped as `ended_right` says (and is then
    /// restarted by request, to keep it in the game).
    async fn settle(
        &mut self,
        fault: &str,
        id: &str,
        restarts: u64,
        ended_right: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<()> {
        let policy = self.policies[id].clone();
        let deadline = Instant::now() + SETTLE;
        loop {
            let info = self
                .server()
                .remote
                .json("GET", &format!("/v1/sessions/{id}"), None)
                .await?;
            let state = info["state"].as_str().unwrap_or("");
            let done = match policy.as_str() {
                "never" => state == "stopped",
                _ => state == "running" && info["restarts"].as_u64().unwrap_or(0) > restarts,
            };
            if done {
                if policy == "never" {
                    if !ended_right(&info) {
                        self.fail(fault, format!("never session {id} ended {info}"));
                    }
                    let mut ws = self.server().remote.ws().await?;
                    ws.call(json!({"type": "restart", "session": id})).await?;
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                self.fail(
                    fault,
                    format!("{policy} session {id} did not settle: {info}"),
                );
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn server_crash(&mut self, tear: bool) -> anyhow::Result<bool> {
        // Who the dying server leaves behind, by identity (pid reuse proof).
        // Every session's main process must survive (its holder keeps it, PTY or pipes). (A
        // counter's `sleep 0.005` ends by itself: only main processes are compared.)
        let mains: Vec<i32> = self
            .list()
            .await?
            .iter()
            .filter_map(|s| s["pid"].as_i64().map(|p| p as i32))
            .collect();
        let mut old = Vec::new();
        for p in procfs::all() {
            if p.is_zombie() {
                continue;
            }
            if procfs::environ_value(p.pid, "CORRAL_SESSION_ID")
                .is_none_or(|v| !self.policies.contains_key(&v))
            {
                continue;
            }
            if let Ok(id) = ProcessIdentity::of(p.pid)
                && mains.contains(&p.pid)
            {
                old.push(id);
            }
        }
        let pids: HashMap<String, Value> = self
            .list()
            .await?
            .iter()
            .filter_map(|s| Some((id_of(s).ok()?, s["pid"].clone())))
            .collect();
        // invariant: the server is up between faults.
        let server = self.server.take().expect("server up");
        tokio::time::sleep(Duration::from_millis(self.rng.u64(0..200))).await;
        let dir = server.crash()?;
        let mut torn: Option<(String, Vec<u8>)> = None;
        if tear {
            let (data, mut rng) = (dir.path().to_path_buf(), self.rng.fork());
            torn = blocking(move || tear_a_tail(&data, &mut rng)).await?;
            if let Some((id, _)) = &torn {
                let (log, _) = LogReader::open(dir.path().join("logs").join(id))?;
                self.damaged
                    .entry(id.clone())
                    .or_default()
                    .push(log.next_offset());
            }
        }
        self.server = Some(Served::start_in(dir).await?);
        let after = if tear {
            "torn log tail"
        } else {
            "server SIGKILL + restart"
        };
        for p in &old {
            if !p.is_alive_same() {
                self.fail(
                    after,
                    format!("process {} of a session did not survive", p.pid),
                );
            }
        }
        let list = self.list().await?;
        if list.len() != self.policies.len() {
            self.fail(after, format!("{} sessions came back", list.len()));
        }
        for s in &list {
            let id = id_of(s)?;
            let state = s["state"].as_str().unwrap_or("");
            if !self.policies.contains_key(&id) {
                self.fail(after, format!("unknown session {s}"));
                continue;
            }
            if state != "running" && state != "starting" {
                self.fail(after, format!("session not running again: {s}"));
            }
            if id != self.sink
                && pids
                    .get(&id)
                    .is_some_and(|p| p.is_number() && *p != s["pid"])
            {
                self.fail(after, format!("PTY session has a new pid: {s}"));
            }
        }
        if let Some((id, before)) = torn {
            let (data, of) = (self.server().dir().to_path_buf(), id.clone());
            let now = blocking(move || read_scrollback(&data, &of)).await?.0;
            let common = before.iter().zip(&now).take_while(|(a, b)| a == b).count();
            // Recovery keeps every record before the damage: all but the torn record(s).
            if common + 64 * 1024 < before.len() {
                self.fail(
                    after,
                    format!(
                        "scrollback of {id} kept {common} of {} bytes before the damage",
                        before.len()
                    ),
                );
            }
        }
        Ok(true)
    }

    async fn stalled_viewer(&mut self) -> anyhow::Result<bool> {
        let id = self.busy_session().await?;
        let remote = &self.server().remote;
        let mut stalled = remote.ws().await?;
        stalled
            .call(json!({"type": "subscribe", "session": id}))
            .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut other = remote.ws().await?;
        let t = Instant::now();
        let pong =
            tokio::time::timeout(Duration::from_secs(1), other.call(json!({"type": "ping"}))).await;
        let slow = !matches!(pong, Ok(Ok(_)));
        let took = t.elapsed();
        let mut got = false;
        let end = Instant::now() + Duration::from_secs(2);
        while !got && Instant::now() < end {
            match tokio::time::timeout(Duration::from_millis(500), stalled.next()).await {
                Ok(Incoming::Bin(1, _, _, _)) => got = true,
                Ok(Incoming::Json(v)) if v["type"] == "lagged" => got = true,
                Ok(Incoming::Closed(r)) => bail!("stalled viewer closed: {r}"),
                _ => {}
            }
        }
        drop(stalled);
        if slow {
            self.fail(
                "stalled viewer",
                format!("another client's ping took {took:?}"),
            );
        }
        if !got {
            self.fail(
                "stalled viewer",
                "the stalled viewer got neither output nor lagged".into(),
            );
        }
        Ok(true)
    }

    async fn flapping_viewer(&mut self) -> anyhow::Result<bool> {
        let id = self.busy_session().await?;
        for _ in 0..30 {
            let mut ws = self.server().remote.ws().await?;
            ws.call(json!({"type": "subscribe", "session": id})).await?;
            let frame = tokio::time::timeout(Duration::from_secs(1), ws.next()).await;
            if frame.is_err() {
                self.fail("flapping viewer", "no frame within 1 s".into());
            }
        }
        Ok(true)
    }

    async fn input_flood(&mut self) -> anyhow::Result<bool> {
        let mut ws = self.server().remote.ws().await?;
        let chunk = "x".repeat(8 * 1024);
        for _ in 0..1000 {
            ws.send(json!({"type": "input", "session": self.sink, "data": chunk}))
                .await?;
        }
        let pong =
            tokio::time::timeout(Duration::from_secs(10), ws.call(json!({"type": "ping"}))).await;
        if !matches!(pong, Ok(Ok(_))) {
            self.fail("input flood", "no pong after the flood".into());
        }
        Ok(true)
    }

    async fn holder_kill(&mut self) -> anyhow::Result<bool> {
        let list = self.list().await?;
        let running: Vec<&Value> = list
            .iter()
            .filter(|s| s["state"] == "running" && s["id"] != json!(self.sink))
            .collect();
        if running.is_empty() {
            return Ok(false);
        }
        let s = running[self.rng.usize(..running.len())];
        let id = id_of(s)?;
        let restarts = s["restarts"].as_u64().unwrap_or(0);
        let pid = s["pid"].as_i64().unwrap_or(0) as i32;
        let Some(holder) = procfs::read_stat(pid).ok().map(|p| p.ppid) else {
            return Ok(false);
        };
        let members: Vec<ProcessIdentity> = procfs::all()
            .into_iter()
            .filter(|p| {
                !p.is_zombie()
                    && procfs::environ_value(p.pid, "CORRAL_SESSION_ID").as_deref() == Some(&id)
            })
            .filter_map(|p| ProcessIdentity::of(p.pid).ok())
            .collect();
        if let Err(e) = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(holder),
            nix::sys::signal::Signal::SIGKILL,
        ) {
            bail!("kill holder {holder}: {e}");
        }
        self.settle("holder SIGKILL", &id, restarts, |info| {
            info["reason"].as_str().is_some_and(|r| r.contains("lost"))
        })
        .await?;
        for p in members {
            if p.is_alive_same() {
                self.fail(
                    "holder SIGKILL",
                    format!("process {} outlived its lost session", p.pid),
                );
            }
        }
        Ok(true)
    }

    /// A running counter (the always ones never stay down long).
    async fn busy_session(&self) -> anyhow::Result<String> {
        for s in self.list().await? {
            if s["state"] == "running" && s["id"] != json!(self.sink) {
                return id_of(&s);
            }
        }
        bail!("no running session")
    }

    // ----- invariants -----

    async fn invariants(&mut self, after: &str) -> anyhow::Result<()> {
        self.checks += 1;
        let deadline = Instant::now() + SETTLE;
        let mut problems;
        loop {
            problems = self.violations().await?;
            if problems.is_empty() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for p in problems {
            self.fail(after, p);
        }
        Ok(())
    }

    /// What is wrong right now (empty: all invariants hold).
    async fn violations(&self) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        let server = self.server();
        let health = server.remote.json("GET", "/v1/health", None).await;
        if health.is_err() {
            out.push("the server does not answer /v1/health".into());
            return Ok(out);
        }
        let list = self.list().await?;
        let states: HashMap<String, String> = list
            .iter()
            .filter_map(|s| Some((id_of(s).ok()?, s["state"].as_str()?.to_string())))
            .collect();
        // No orphan.
        for p in procfs::all() {
            if p.is_zombie() {
                continue;
            }
            let Some(owner) = procfs::environ_value(p.pid, "CORRAL_SESSION_ID") else {
                continue;
            };
            if !self.policies.contains_key(&owner) {
                continue;
            }
            match states.get(&owner).map(String::as_str) {
                Some("stopped" | "failed") | None => {
                    out.push(format!("orphan {} ({}) of session {owner}", p.pid, p.comm))
                }
                _ => {}
            }
        }
        // No holder without a live session: a holder exits with its session (its socket with it).
        if let Ok(entries) = std::fs::read_dir(server.dir().join("holders")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(owner) = name.strip_suffix(".sock") else {
                    continue;
                };
                match states.get(owner).map(String::as_str) {
                    Some("stopped" | "failed") | None => {
                        out.push(format!("holder socket {name} of an ended session"))
                    }
                    _ => {}
                }
            }
        }
        // No zombie child of the server.
        let me = server.pid();
        for p in procfs::all() {
            if p.ppid == me && p.is_zombie() {
                out.push(format!("zombie child {} ({})", p.pid, p.comm));
            }
        }
        // Registry integrity.
        match rusqlite::Connection::open_with_flags(
            server.dir().join("state.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .and_then(|db| db.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0)))
        {
            Ok(ok) if ok == "ok" => {}
            Ok(other) => out.push(format!("state.db: {other}")),
            Err(e) => out.push(format!("state.db unreadable: {e}")),
        }
        // Bounded memory and fds.
        let rss_kib = corral_actors::process::procfs::status_kib(me, "VmRSS").unwrap_or(0);
        if rss_kib > 512 * 1024 {
            out.push(format!("server RSS {rss_kib} KiB"));
        }
        let fds = std::fs::read_dir(format!("/proc/{me}/fd"))
            .map(|d| d.count())
            .unwrap_or(0);
        if fds > 4096 {
            out.push(format!("server holds {fds} fds"));
        }
        // No viewer left behind by this harness (every client above was dropped).
        for s in &list {
            if s["viewers"].as_u64().unwrap_or(0) > 0 {
                out.push(format!("session {} still has viewers", s["name"]));
            }
        }
        Ok(out)
    }

    /// Every session's scrollback: no gap, and each process run's counters contiguous.
    async fn no_byte_lost(&mut self) -> anyhow::Result<()> {
        self.checks += 1;
        let dir = self.server().dir().to_path_buf();
        let ids: Vec<String> = self.policies.keys().cloned().collect();
        for id in ids {
            if id == self.sink {
                continue;
            }
            let (data, of) = (dir.clone(), id.clone());
            let (bytes, gaps) = blocking(move || read_scrollback(&data, &of)).await?;
            let damaged = self.damaged.get(&id).cloned().unwrap_or_default();
            for (from, to) in gaps {
                if !damaged.contains(&from) {
                    self.fail(
                        "the run",
                        format!("scrollback of {id} has a gap {from}..{to}"),
                    );
                }
            }
            let mut last: HashMap<String, u64> = HashMap::new();
            let text = String::from_utf8_lossy(&bytes);
            let mut broken = 0;
            let mut prev_pid: Option<String> = None;
            // PTY lines end in \r\n, pipe lines in \n.
            for line in text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
                let mut parts = line.split(' ');
                let parsed = match (parts.next(), parts.next(), parts.next()) {
                    (Some(pid), Some(n), None) => n.parse::<u64>().ok().map(|n| (pid, n)),
                    _ => None,
                };
                let Some((pid, n)) = parsed else {
                    prev_pid = None;
                    continue;
                };
                // Only lines right after a whole line of the same run are compared: a kill may
                // cut a run mid-line, and the cut line is not a counter line.
                if prev_pid.as_deref() == Some(pid)
                    && let Some(&p) = last.get(pid)
                    && n != p + 1
                {
                    broken += 1;
                }
                prev_pid = Some(pid.to_string());
                last.insert(pid.to_string(), n);
            }
            if broken > 0 {
                self.fail(
                    "the run",
                    format!("scrollback of {id}: {broken} counter discontinuities"),
                );
            }
        }
        Ok(())
    }
}

fn id_of(v: &Value) -> anyhow::Result<String> {
    v["id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no id in {v}"))
}

/// Output offsets `[from, to)` a log lacks.
type Gaps = Vec<(u64, u64)>;

/// Runs a file-reading `f` on the blocking pool (logs are megabytes: not on a runtime worker).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

/// A session's scrollback from disk: its bytes (a line break where a gap is, so no counter
/// line spans one) and its gaps.
fn read_scrollback(data: &Path, id: &str) -> anyhow::Result<(Vec<u8>, Gaps)> {
    let dir = data.join("logs").join(id);
    if !dir.exists() {
        return Ok((Vec::new(), Vec::new()));
    }
    let (reader, _damage) = LogReader::open(&dir)?;
    let Some(first) = reader.first_offset() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut bytes = Vec::new();
    let mut gaps = Vec::new();
    for c in reader.read_range(first, usize::MAX)? {
        match c {
            Chunk::Data { bytes: b, .. } => bytes.extend_from_slice(&b),
            Chunk::Gap { from, to } => {
                bytes.push(b'\n');
                gaps.push((from, to));
            }
        }
    }
    Ok((bytes, gaps))
}

/// Damages the end of a random session's last segment; returns that session and its scrollback
/// as it was before.
fn tear_a_tail(data: &Path, rng: &mut fastrand::Rng) -> anyhow::Result<Option<(String, Vec<u8>)>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(data.join("logs"))?
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        return Ok(None);
    }
    let dir = dirs.swap_remove(rng.usize(..dirs.len()));
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let before = read_scrollback(data, &id)?.0;
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    let Some(last) = segs.last() else {
        return Ok(None);
    };
    let len = std::fs::metadata(last)?.len();
    if len < 16 {
        return Ok(None);
    }
    let back = rng.u64(1..len.min(200));
    if rng.bool() {
        let f = std::fs::OpenOptions::new().write(true).open(last)?;
        f.set_len(len - back)?;
    } else {
        let mut content = std::fs::read(last)?;
        let at = (len - back) as usize;
        content[at] ^= 1 << rng.u32(0..8);
        std::fs::write(last, content)?;
    }
    Ok(Some((id, before)))
}
