//! Prometheus metrics (`GET /metrics`, text format via prometheus-client). Counters are bumped
//! where things happen; gauges that describe sessions are computed at scrape time from the
//! session list, so nothing polls in the background.

use std::sync::atomic::AtomicU64;

use corral_actors::{SessionState, Sessions};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of per-state session gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// Session state.
    pub state: String,
}

/// Label of the agent-sessions gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttentionLabel {
    /// The attention state.
    pub attention: String,
}

/// Label of per-reason counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: String,
}

/// Label of persister counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// What is counted.
    pub kind: String,
}

/// Every metric of the gateway.
pub struct Metrics {
    /// The registry they are encoded from.
    registry: Registry,
    /// Sessions by state (scrape time).
    pub sessions: Family<StateLabel, Gauge>,
    /// Notifications by outcome (sent, failed, dropped).
    pub notifications: Family<KindLabel, Counter>,
    /// Agent sessions by attention state (starting, working, needs_permission, idle, exited).
    pub agent_sessions: Family<AttentionLabel, Gauge>,
    /// Total session restarts (scrape time).
    pub restarts: Gauge,
    /// Session lag events delivered to subscribers (scrape time).
    pub session_lag_events: Gauge,
    /// Connected WebSocket clients.
    pub clients: Gauge,
    /// Output bytes sent to clients.
    pub bytes_out: Counter,
    /// Input bytes received from clients.
    pub bytes_in: Counter,
    /// `lagged` frames sent.
    pub lagged: Counter,
    /// Messages or bytes refused by rate limits.
    pub rate_limited: Counter,
    /// Refused frames and requests, by reason.
    pub rejected: Family<ReasonLabel, Counter>,
    /// Persister counters, copied from its atomics at scrape time (kind label: db_errors,
    /// segment_errors, ops_dropped, gap_bytes, segment_bytes, ops_committed, commits).
    pub persist: Family<KindLabel, Counter<u64, AtomicU64>>,
    /// Journal operations waiting for a retry after a failed commit.
    pub persist_pending: Gauge,
    /// Hook events accepted.
    pub hook_events: Counter,
    /// Bulk reading of flooding output, copied at scrape time (kind: slices, bytes).
    pub bulk_reading: Family<KindLabel, Counter<u64, AtomicU64>>,
    /// Sessions' output waiting for their viewers (see `corral_actors::pacing_stats`).
    pub pacing: Family<KindLabel, Counter<u64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("corral");
        let m = Metrics {
            registry: Registry::default(),
            sessions: Family::default(),
            agent_sessions: Family::default(),
            notifications: Family::default(),
            restarts: Gauge::default(),
            session_lag_events: Gauge::default(),
            clients: Gauge::default(),
            bytes_out: Counter::default(),
            bytes_in: Counter::default(),
            lagged: Counter::default(),
            rate_limited: Counter::default(),
            rejected: Family::default(),
            persist: Family::default(),
            persist_pending: Gauge::default(),
            hook_events: Counter::default(),
            bulk_reading: Family::default(),
            pacing: Family::default(),
        };
        registry.register("sessions", "Sessions by state", m.sessions.clone());
        registry.register(
            "notifications",
            "Webhook notifications by outcome (sent, failed after retries, dropped: queue full, undelivered: the server stopped first)",
            m.notifications.clone(),
        );
        registry.register(
            "agent_sessions",
            "Agent sessions by attention state",
            m.agent_sessions.clone(),
        );
        registry.register(
            "session_restarts",
            "Process restarts of all sessions",
            m.restarts.clone(),
        );
        registry.register(
            "session_lag_events",
            "Lag events delivered to session subscribers",
            m.session_lag_events.clone(),
        );
        registry.register("clients", "Connected WebSocket clients", m.clients.clone());
        registry.register(
            "output_bytes",
            "Output bytes sent to clients",
            m.bytes_out.clone(),
        );
        registry.register(
            "input_bytes",
            "Input bytes received from clients",
            m.bytes_in.clone(),
        );
        registry.register(
            "lagged_frames",
            "Lagged frames sent to clients",
            m.lagged.clone(),
        );
        registry.register(
            "rate_limited",
            "Messages that waited for a rate limit (paced, never refused)",
            m.rate_limited.clone(),
        );
        registry.register(
            "rejected",
            "Refused frames and requests by reason",
            m.rejected.clone(),
        );
        registry.register(
            "persist",
            "Persister counters by kind (errors are retried; drops and gaps are recorded in the journal and the scrollback)",
            m.persist.clone(),
        );
        registry.register(
            "persist_pending",
            "Journal operations waiting for a retry",
            m.persist_pending.clone(),
        );
        registry.register("hook_events", "Hook events accepted", m.hook_events.clone());
        registry.register(
            "bulk_reading",
            "Flooding output read off the async workers: slices run and bytes read in them",
            m.bulk_reading.clone(),
        );
        registry.register(
            "pacing",
            "Sessions' output waiting for viewers that keep up: waits, milliseconds waited, waits that ran out (their viewers then lapped), seconds in which a session's 200 ms of waiting were spent (it then waited for nobody)",
            m.pacing.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Counts a notification's outcome.
    pub fn notify(&self, kind: &str) {
        self.notifications
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// Counts a refusal.
    pub fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// Encodes everything, refreshing session gauges first.
    pub fn encode(&self, sessions: &Sessions) -> String {
        if let Some(p) = sessions.persist() {
            use std::sync::atomic::Ordering::Relaxed;
            let st = p.stats();
            for (kind, v) in [
                ("db_errors", &st.db_errors),
                ("segment_errors", &st.segment_errors),
                ("ops_dropped", &st.ops_dropped),
                ("gap_bytes", &st.gap_bytes),
                ("segment_bytes", &st.segment_bytes),
                ("ops_committed", &st.ops_committed),
                ("commits", &st.commits),
            ] {
                self.persist
                    .get_or_create(&KindLabel { kind: kind.into() })
                    .inner()
                    .store(v.load(Relaxed), Relaxed);
            }
            self.persist_pending.set(st.db_pending.load(Relaxed) as i64);
        }
        let (slices, bytes) = corral_actors::bulk_reading_stats();
        for (kind, v) in [("slices", slices), ("bytes", bytes)] {
            self.bulk_reading
                .get_or_create(&KindLabel { kind: kind.into() })
                .inner()
                .store(v, std::sync::atomic::Ordering::Relaxed);
        }
        let pacing = corral_actors::pacing_stats();
        for (kind, v) in [
            ("waits", pacing.waits),
            ("waited_ms", pacing.waited_ms),
            ("ran_out", pacing.ran_out),
            ("budget_spent", pacing.budget_spent),
        ] {
            self.pacing
                .get_or_create(&KindLabel { kind: kind.into() })
                .inner()
                .store(v, std::sync::atomic::Ordering::Relaxed);
        }
        const STATES: [SessionState; 7] = [
            SessionState::Starting,
            SessionState::Running,
            SessionState::Stopping,
            SessionState::Exited,
            SessionState::Restarting,
            SessionState::Stopped,
            SessionState::Failed,
        ];
        let list = sessions.list();
        for state in STATES {
            let n = list.iter().filter(|s| s.state == state).count();
            self.sessions
                .get_or_create(&StateLabel {
                    state: wire_name(state),
                })
                .set(n as i64);
        }
        use corral_actors::attention::Attention;
        for attention in [
            Attention::Starting,
            Attention::Working,
            Attention::NeedsPermission,
            Attention::Idle,
            Attention::Exited,
        ] {
            let n = list
                .iter()
                .filter(|s| s.attention == Some(attention))
                .count();
            self.agent_sessions
                .get_or_create(&AttentionLabel {
                    attention: wire_name(attention),
                })
                .set(n as i64);
        }
        self.restarts
            .set(list.iter().map(|s| s.restarts as i64).sum());
        self.session_lag_events
            .set(list.iter().map(|s| s.lag_events as i64).sum());
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// A unit enum's name as the API spells it (its serde form), for a metric label.
fn wire_name(v: impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
