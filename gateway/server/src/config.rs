//! Config: what `corral serve` reads from its TOML file (`--config`), with the defaults a
//! server runs on when there is none: the listen address, allowed origins, client limits,
//! persistence and worker threads. Unknown keys are an error naming them.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use corral_actors::persist::{
    EndedRetention, EventRetention, FsyncPolicy, PersistConfig, SegmentConfig,
};
use serde::{Deserialize, Serialize};

use crate::http_url::HttpUrl;

/// Limits on what clients may send, with their defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest WebSocket message in bytes (default 64 KiB).
    pub max_frame: usize,
    /// Messages per second per connection (default 1000; burst twice that).
    pub messages_per_sec: u32,
    /// Input bytes per second per connection (default 4 MiB; burst twice that).
    pub input_bytes_per_sec: u32,
    /// Concurrent WebSocket connections (default 1024).
    pub max_connections: usize,
    /// Seconds a message may wait for a limit (typically input for a process that does not
    /// read it) before the connection is closed with 1008 (default 30).
    pub input_stall_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: 64 * 1024,
            messages_per_sec: 1000,
            input_bytes_per_sec: 4 << 20,
            max_connections: 1024,
            input_stall_secs: 30,
        }
    }
}

/// `--listen` and `listen`: an IP address and a port; `localhost` is the IPv4 loopback (the one corral binds
/// by default). A name otherwise is refused saying what is wanted (clap's own message was
/// "invalid socket address syntax").
pub fn listen_address(arg: &str) -> Result<SocketAddr, String> {
    if let Some(port) = arg.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("'{port}' is not a port (0 to 65535)"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    arg.parse().map_err(|_| {
        "an IP address and a port are wanted (e.g. 127.0.0.1:7070, [::1]:7070, 0.0.0.0:7070 \
         for every address)"
            .to_string()
    })
}

/// `listen` in a config file, read as `--listen` is ([`listen_address`]).
fn listen_from<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    listen_address(&text).map_err(serde::de::Error::custom)
}

/// Gateway settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address to bind (default 127.0.0.1:7070; port 0 picks a free one; `localhost:PORT`
    /// is 127.0.0.1:PORT, as with `--listen`).
    #[serde(deserialize_with = "listen_from")]
    pub listen: SocketAddr,
    /// Origins allowed to open WebSockets besides the server's own (default none).
    pub allowed_origins: Vec<String>,
    /// Client limits.
    pub limits: Limits,
    /// What is kept on disk, and for how long.
    pub persist: PersistSettings,
    /// Agent sessions.
    pub agents: AgentSettings,
    /// Notifications out (webhooks).
    pub notify: NotifySettings,
    /// Give every PTY session a holder process (default true), so sessions outlive a crash or
    /// an upgrade of the server. False: the server holds the terminals itself and its PTY
    /// sessions end with it (one process fewer per session; `corral bench holder` compares).
    pub holders: bool,
    /// Async worker threads (default: one per core but one, at least one). corral's async work
    /// is shuffling bytes between fds; the core left over runs the persister and syncer threads,
    /// the kernel's PTY work and the agents themselves. On the 2-core bench machine one worker
    /// gave 0.72× a plain PTY loop's throughput to one client with 0 bytes lagged, against
    /// 0.63× with 34 MB lagged for two (cross-worker wake-ups doubled the server's CPU per GB);
    /// fan-out to 100 viewers delivered less per viewer (6.6 vs 8.2 MB/s), see
    /// docs/performance.md.
    pub workers: Option<usize>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            allowed_origins: Vec::new(),
            limits: Limits::default(),
            persist: PersistSettings::default(),
            agents: AgentSettings::default(),
            notify: NotifySettings::default(),
            holders: true,
            workers: None,
        }
    }
}

impl GatewayConfig {
    /// Refuses an `allowed_origins` entry no browser ever sends (compared as written, it would
    /// never match, and the pages it was meant for would get 403 without a word): an origin is
    /// `http://` or `https://`, a lower-case host, an optional port, and nothing after.
    pub fn check_origins(&self) -> Result<(), String> {
        for origin in &self.allowed_origins {
            let rest = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            let ok = rest.is_some_and(|hostport| {
                !hostport.is_empty()
                    && hostport.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || "-.:[]".contains(c)
                    })
            });
            if !ok {
                return Err(format!(
                    "allowed_origins: '{origin}' is not an origin as browsers send it (`https://host` or `http://host:port`: lower case, no path, no trailing slash, no wildcard)"
                ));
            }
        }
        Ok(())
    }

    /// Most async worker threads (`workers`): past it a typo's 100000 made the server spend
    /// minutes starting threads before it served, saying nothing.
    pub const MAX_WORKERS: usize = 1024;

    /// Refuses, at start, settings that would leave the server unusable or a feature dead
    /// without a word: a zero limit (every WebSocket refused, every input refused), a worker
    /// count past [`Self::MAX_WORKERS`], a webhook that is not plain `http://host…` or of an
    /// unknown format, a `page_url` no phone can open. Each error names its key.
    pub fn check(&self) -> Result<(), String> {
        let l = &self.limits;
        for (key, value, least) in [
            ("limits.max_frame", l.max_frame as u64, 4096),
            ("limits.messages_per_sec", u64::from(l.messages_per_sec), 1),
            (
                "limits.input_bytes_per_sec",
                u64::from(l.input_bytes_per_sec),
                1024,
            ),
            ("limits.max_connections", l.max_connections as u64, 1),
            ("limits.input_stall_secs", l.input_stall_secs, 1),
            // Zero kept no event at all: `corral events` printed nothing, agents' states did
            // not survive a restart.
            ("persist.max_events", self.persist.max_events, 1),
            (
                "persist.event_max_age_days",
                self.persist.event_max_age_days,
                1,
            ),
        ] {
            if value < least {
                return Err(format!("{key}: at least {least} (it is {value})"));
            }
        }
        if let Some(w) = self.workers
            && !(1..=Self::MAX_WORKERS).contains(&w)
        {
            return Err(format!(
                "workers: from 1 to {} (it is {w})",
                Self::MAX_WORKERS
            ));
        }
        for (i, hook) in self.notify.webhooks.iter().enumerate() {
            // Which one by its place too: an unparseable URL is not shown (it may hold a secret).
            if let Err(why) = hook.target() {
                return Err(format!(
                    "notify.webhooks (number {}): url '{}' {why}",
                    i + 1,
                    hook.shown()
                ));
            }
            if !matches!(hook.format.as_str(), "json" | "text") {
                return Err(format!(
                    "notify.webhooks: format '{}' for {}: json or text",
                    hook.format,
                    hook.shown()
                ));
            }
        }
        if let Some(page) = &self.notify.page_url {
            let host = page
                .strip_prefix("http://")
                .or_else(|| page.strip_prefix("https://"))
                .unwrap_or_default();
            if host.is_empty() || host.starts_with('/') {
                return Err(format!(
                    "notify.page_url: '{page}' is not an http:// or https:// address with a host"
                ));
            }
        }
        self.check_origins()
    }

    /// The worker threads to start: the configured number, else one per core but one.
    pub fn worker_threads(&self) -> usize {
        self.workers
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get().saturating_sub(1))
                    .unwrap_or(1)
            })
            .max(1)
    }
}

/// The `[notify]` section: where to tell that a session needs its user.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySettings {
    /// Webhooks: each gets a POST per notification.
    pub webhooks: Vec<Webhook>,
    /// The web page's address as a phone reaches it (a reverse proxy's, say
    /// `https://corral.example/`): each notification links to its session there. Default: the
    /// server's own URL.
    pub page_url: Option<String>,
}

/// `url` with anything after its host cut to `/…`, and a user or password before it to `…@`
/// (see [`Webhook::shown`]).
pub fn shown_url(url: &str) -> String {
    // Not a URL: nothing of it is shown (it may hold a secret anywhere).
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return "(not a URL)".into();
    };
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return "(not a URL)".into();
    };
    let host = match authority.as_str().rsplit_once('@') {
        Some((_, host)) => format!("…@{host}"),
        None => authority.to_string(),
    };
    match uri.path_and_query().map(|p| p.as_str()) {
        Some(p) if p != "/" => format!("{scheme}://{host}/…"),
        // Nothing after the host to hide; "/" kept as written.
        _ if url.ends_with('/') => format!("{scheme}://{host}/"),
        _ => format!("{scheme}://{host}"),
    }
}

/// One webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://host:port/path` (plain HTTP; put a TLS proxy in front for https).
    pub url: String,
    /// `json` (default: the notification as JSON) or `text` (one line of plain text, as
    /// ntfy-style topic URLs take).
    #[serde(default = "Webhook::json")]
    pub format: String,
}

impl Webhook {
    fn json() -> String {
        "json".into()
    }

    /// The URL as logs and errors show it: its scheme and host, the path hidden (a webhook's
    /// path is often its secret: an ntfy topic, a chat's hook key).
    pub fn shown(&self) -> String {
        shown_url(&self.url)
    }

    /// Where its POST goes; the error says what is wrong with the URL.
    pub fn target(&self) -> Result<HttpUrl, &'static str> {
        HttpUrl::parse(&self.url)
    }
}

/// The `[agents]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    /// How long a PermissionRequest hook waits for an answer from the API before it returns no
    /// decision and the agent shows its own prompt (default 120 s, at most 600).
    pub permission_wait_secs: u64,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            permission_wait_secs: corral_actors::agent::PERMISSION_WAIT.as_secs(),
        }
    }
}

impl AgentSettings {
    /// A bad value is an error naming it (a wait past what the hook command outlasts would be
    /// cut short without a word).
    pub fn check(&self) -> anyhow::Result<()> {
        let max = corral_actors::agent::PERMISSION_WAIT_MAX.as_secs();
        if self.permission_wait_secs > max {
            anyhow::bail!(
                "agents.permission_wait_secs: at most {max} (Claude Code's hook timeout is set to outlast it)"
            );
        }
        Ok(())
    }

    /// The permission wait, bounded by what the hook command itself waits for.
    pub fn permission_wait(&self) -> Duration {
        Duration::from_secs(
            self.permission_wait_secs
                .min(corral_actors::agent::PERMISSION_WAIT_MAX.as_secs()),
        )
    }
}

/// The `[persist]` section: scrollback size, durability and retention (docs/operations.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersistSettings {
    /// Scrollback segment file size in bytes (default 4 MiB).
    pub segment_bytes: u64,
    /// Scrollback kept per session in bytes, plus the segment being written (default 64 MiB).
    pub scrollback_bytes: u64,
    /// When scrollback is fsynced: "on_rotate" (default; plus at most every second while output
    /// flows), "every_append", or "never".
    pub fsync: String,
    /// Events kept in the journal (default 100,000).
    pub max_events: u64,
    /// Events older than this many days are deleted (default 30).
    pub event_max_age_days: u64,
    /// Ended sessions kept with their scrollback (default 200).
    pub ended_max_sessions: usize,
    /// Ended sessions older than this many days are deleted (default 7).
    pub ended_max_age_days: u64,
}

impl Default for PersistSettings {
    fn default() -> Self {
        let segment = SegmentConfig::default();
        let events = EventRetention::default();
        let ended = EndedRetention::default();
        Self {
            segment_bytes: segment.segment_bytes,
            scrollback_bytes: segment.max_total_bytes,
            fsync: "on_rotate".into(),
            max_events: events.max_events,
            event_max_age_days: events.max_age.as_secs() / 86_400,
            ended_max_sessions: ended.max_sessions,
            ended_max_age_days: ended.max_age.as_secs() / 86_400,
        }
    }
}

impl PersistSettings {
    /// The actor-level config for data dir `dir`; a bad value is an error naming it.
    pub fn to_config(&self, dir: &Path) -> anyhow::Result<PersistConfig> {
        const DAY: u64 = 86_400;
        let fsync = match self.fsync.as_str() {
            "on_rotate" => FsyncPolicy::OnRotate,
            "every_append" => FsyncPolicy::EveryAppend,
            "never" => FsyncPolicy::Never,
            other => anyhow::bail!(
                "persist.fsync: unknown policy '{other}' (on_rotate, every_append, never)"
            ),
        };
        if self.segment_bytes < corral_actors::persist::segment::MIN_SEGMENT_BYTES {
            anyhow::bail!(
                "persist.segment_bytes: at least {} bytes",
                corral_actors::persist::segment::MIN_SEGMENT_BYTES
            );
        }
        Ok(PersistConfig {
            dir: dir.to_path_buf(),
            segment: SegmentConfig {
                segment_bytes: self.segment_bytes,
                max_total_bytes: self.scrollback_bytes,
                fsync,
            },
            events: EventRetention {
                max_events: self.max_events,
                max_age: Duration::from_secs(self.event_max_age_days.saturating_mul(DAY)),
            },
            ended: EndedRetention {
                max_sessions: self.ended_max_sessions,
                max_age: Duration::from_secs(self.ended_max_age_days.saturating_mul(DAY)),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_s_target_comes_from_its_url() {
        let target = |url: &str| {
            Webhook {
                url: url.into(),
                format: Webhook::json(),
            }
            .target()
        };
        // No port: HTTP's 80 (a hand split once connected to "host" and failed).
        let url = target("http://ntfy.local/topic?x=1").unwrap();
        assert_eq!(
            (
                url.address().as_str(),
                url.authority.as_str(),
                url.path.as_str()
            ),
            ("ntfy.local:80", "ntfy.local", "/topic?x=1")
        );
        let url = target("http://[::1]:8080").unwrap();
        assert_eq!(
            (
                url.address().as_str(),
                url.authority.as_str(),
                url.path.as_str()
            ),
            ("[::1]:8080", "[::1]:8080", "/")
        );
        assert_eq!(
            target("http://127.0.0.1:19101?topic=qs").map(|t| t.path),
            Ok("/?topic=qs".to_string())
        );
        assert!(target("http://me:secret@relay/hook").is_err());
        // A password with a `/` ends the authority early: its "port" is refused.
        assert!(target("http://me:pa/ss@relay/hook").is_err());
        for port in ["7O70", "99999", "0", ""] {
            assert!(
                target(&format!("http://box:{port}/hook")).is_err(),
                "{port}"
            );
        }
        assert!(target("https://relay/hook").is_err());
        assert!(target("relay/hook").is_err());
    }

    #[test]
    fn a_webhook_is_shown_without_its_path() {
        assert_eq!(
            shown_url("http://ntfy.local:8080/secret-topic"),
            "http://ntfy.local:8080/…"
        );
        assert_eq!(shown_url("http://relay/"), "http://relay/");
        assert_eq!(shown_url("http://relay"), "http://relay");
        assert_eq!(
            shown_url("https://hooks.example/services/T0/B0/key"),
            "https://hooks.example/…"
        );
        assert_eq!(shown_url("garbage"), "(not a URL)");
        assert_eq!(shown_url("http://x/a secret"), "(not a URL)");
        assert_eq!(
            shown_url("http://me:secret@relay:81/hook"),
            "http://…@relay:81/…"
        );
        assert_eq!(shown_url("http://me:secret@relay"), "http://…@relay");
    }

    #[test]
    fn workers_default_to_all_cores_but_one_and_are_configurable() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            GatewayConfig::default().worker_threads(),
            cores.saturating_sub(1).max(1)
        );
        let c: GatewayConfig = toml::from_str("workers = 3").unwrap();
        assert_eq!(c.worker_threads(), 3);
        let c: GatewayConfig = toml::from_str("workers = 0").unwrap();
        assert_eq!(c.worker_threads(), 1, "never zero workers");
    }

    /// `listen = "localhost:7070"` in a config file is taken as `--listen localhost:7070` is
    /// (it was refused: "invalid socket address syntax").
    #[test]
    fn a_config_file_listens_on_localhost_as_the_flag_does() {
        let c: GatewayConfig = toml::from_str("listen = \"localhost:7071\"").unwrap();
        assert_eq!(c.listen, "127.0.0.1:7071".parse().unwrap());
        let c: GatewayConfig = toml::from_str("listen = \"[::1]:0\"").unwrap();
        assert_eq!(c.listen, "[::1]:0".parse().unwrap());
        let e = toml::from_str::<GatewayConfig>("listen = \"example.com:80\"").unwrap_err();
        assert!(e.to_string().contains("an IP address and a port"), "{e}");
    }

    /// Settings that would leave the server unusable are refused, naming their key.
    #[test]
    fn unusable_settings_are_refused_at_start() {
        assert_eq!(GatewayConfig::default().check(), Ok(()));
        let refused = |edit: &dyn Fn(&mut GatewayConfig), key: &str| {
            let mut c = GatewayConfig::default();
            edit(&mut c);
            let e = c.check().unwrap_err();
            assert!(e.starts_with(key), "{e}");
        };
        refused(&|c| c.limits.max_frame = 0, "limits.max_frame");
        refused(&|c| c.limits.max_connections = 0, "limits.max_connections");
        refused(
            &|c| c.limits.input_bytes_per_sec = 0,
            "limits.input_bytes_per_sec",
        );
        refused(
            &|c| c.limits.messages_per_sec = 0,
            "limits.messages_per_sec",
        );
        refused(&|c| c.workers = Some(100_000), "workers");
        refused(&|c| c.persist.max_events = 0, "persist.max_events");
        refused(
            &|c| c.persist.event_max_age_days = 0,
            "persist.event_max_age_days",
        );
        refused(&|c| c.workers = Some(0), "workers");
        let hook = |url: &str, format: &str| Webhook {
            url: url.into(),
            format: format.into(),
        };
        for (url, format) in [
            ("https://x/y", "json"),
            ("garbage", "json"),
            ("http://x/y", "xml"),
            ("http://me:pw@x/y", "json"),
            ("http:///y", "json"),
        ] {
            refused(
                &|c| c.notify.webhooks = vec![hook(url, format)],
                "notify.webhooks",
            );
        }
        refused(
            &|c| c.notify.page_url = Some("not a url".into()),
            "notify.page_url",
        );
        let mut ok = GatewayConfig::default();
        ok.notify.webhooks = vec![hook("http://127.0.0.1:9/t", "text")];
        ok.notify.page_url = Some("https://corral.example/".into());
        assert_eq!(ok.check(), Ok(()));
        let e = toml::from_str::<GatewayConfig>("workers = -1").unwrap_err();
        assert!(e.to_string().contains("workers"), "{e}");
    }
}
