//! SessionSpec: everything needed to (re)start one agent process, serializable so the registry
//! can persist it and recovery can start it again; and the rules a new spec must keep, each
//! broken one a [`SpecError`] variant.

use std::path::PathBuf;
use std::time::Duration;

use corral_runtime::{Backoff, Intensity};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest name a new session may be given, in bytes.
pub const MAX_NAME: usize = 128;

/// The kernel's bound on one argument or environment string, its NUL included
/// (`MAX_ARG_STRLEN`, 32 pages): a longer one fails the program's exec with `E2BIG`.
pub const MAX_ARG: usize = 128 * 1024;

/// Why a session spec (or a size or a grace given with an operation) is refused, before anything
/// is made for it. Each rule's bound is a constant of [`crate::spec`] or this file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No program to run.
    #[error("argv is empty")]
    EmptyArgv,
    /// A name that is only blanks.
    #[error("name is empty")]
    EmptyName,
    /// A name longer than [`MAX_NAME`] bytes.
    #[error("name is {len} bytes long; at most {max}", max = MAX_NAME)]
    NameTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A name with a control character (it is printed to terminals).
    #[error("name contains the control character {0:?}")]
    NameControl(char),
    /// A name that parses as a session id (a key that parses as one is looked up as an id).
    #[error("name is a session id; choose another")]
    NameIsId,
    /// A name that begins or ends with blanks (they would be part of it, invisible in `ps`).
    #[error("name {0:?} begins or ends with blanks; without them it would be another name")]
    NameBlanks(String),
    /// A name that is the start of another session's id (from 8 characters such a key names
    /// that session too, and every command given the name would be refused as ambiguous).
    #[error("name {0:?} is the start of session {1}'s id; choose another")]
    NameIsIdPrefix(String, Uuid),
    /// `.` or `..`: a URL path holding it (`/agentapi/../status`) is another path.
    #[error(
        "name {0:?} is a path's dot segment (an address naming it would go elsewhere); choose another"
    )]
    NameDots(String),
    /// The id asked for belongs to another session.
    #[error("session id {0} is in use")]
    IdInUse(Uuid),
    /// An environment variable without a name: its place in the spec's list (its value is not
    /// said: it may be a secret, and errors are logged).
    #[error("environment variable #{0} has an empty name (nothing before its '=')")]
    EnvEmptyName(usize),
    /// An environment variable whose name holds `=` (it would arrive split elsewhere): the name
    /// up to the `=` (what follows may be a value, a secret).
    #[error("environment variable name \"{0}=…\" contains '='")]
    EnvNameEquals(String),
    /// An environment variable with a NUL in its name or value (C strings end there).
    #[error("environment variable {0:?} contains a NUL byte")]
    EnvNul(String),
    /// An argument with a NUL byte (its index).
    #[error("argument {0} contains a NUL byte")]
    ArgNul(usize),
    /// An argument, or an environment variable (its name; its value may be a secret), longer
    /// than the kernel passes to a program (`MAX_ARG_STRLEN`, 128 KiB with its NUL).
    #[error("{what} is {len} bytes long; a program is given at most {max} bytes each", max = MAX_ARG - 1)]
    ArgTooLong {
        /// `argument N` or `environment variable NAME`.
        what: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A working directory with a NUL byte.
    #[error("working directory contains a NUL byte")]
    CwdNul,
    /// A terminal of 0 rows or 0 columns.
    #[error("terminal size must be at least 1×1")]
    SizeZero,
    /// A terminal over [`Size::MAX_ROWS`]×[`Size::MAX_COLS`].
    #[error(
        "terminal size {rows}×{cols} is over the {max_rows}×{max_cols} limit",
        max_rows = Size::MAX_ROWS,
        max_cols = Size::MAX_COLS
    )]
    SizeOverLimit {
        /// Rows asked for.
        rows: u16,
        /// Columns asked for.
        cols: u16,
    },
    /// A stop signal that is not a signal's name.
    #[error("unknown stop signal '{0}' (a name such as SIGTERM, TERM or HUP)")]
    UnknownStopSignal(String),
    /// A grace over [`SessionSpec::MAX_GRACE`].
    #[error("grace {0:?} is over the {max:?} limit", max = SessionSpec::MAX_GRACE)]
    GraceOverLimit(Duration),
    /// A grace that is no duration (negative, not finite), as it was given.
    #[error("grace: {0} is not a duration in seconds (finite and not negative)")]
    GraceNotADuration(String),
    /// A Ring outside [`SessionSpec::RING_CAPACITY`].
    #[error(
        "ring_capacity {0} is out of {min}..={max} bytes",
        min = SessionSpec::RING_CAPACITY.start(),
        max = SessionSpec::RING_CAPACITY.end()
    )]
    RingCapacity(usize),
    /// A restart delay over [`SessionSpec::MAX_BACKOFF`].
    #[error("backoff durations must be at most {max:?}", max = SessionSpec::MAX_BACKOFF)]
    BackoffTooLong,
    /// A backoff multiplier outside 1..=1000 or a jitter outside 0..=1, as they were given.
    #[error(
        "backoff multiplier must be in 1..=1000 and jitter in 0..=1 (got {multiplier} and {jitter})"
    )]
    BackoffShape {
        /// The multiplier given.
        multiplier: String,
        /// The jitter given.
        jitter: String,
    },
    /// An agent profile this library does not know.
    #[error("unknown agent profile '{0}' (known: claude)")]
    UnknownAgent(String),
    /// An agent profile without the command its hooks call.
    #[error("agent profiles need a hook command (spawn through corral serve)")]
    AgentWithoutHookCommand,
    /// `stream_json` without an agent profile that speaks it.
    #[error("mode stream_json needs an agent profile that speaks it (agent \"claude\")")]
    StreamJsonWithoutAgent,
}

/// Terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl Size {
    /// Most rows a terminal may have: a screen is kept in memory per session (its emulator),
    /// and an absurd size (65535×65535) took the server's memory to gigabytes.
    pub const MAX_ROWS: u16 = 1000;
    /// Most columns.
    pub const MAX_COLS: u16 = 1000;

    /// Refuses a size no terminal has: 0, or more than [`Self::MAX_ROWS`]×[`Self::MAX_COLS`].
    pub fn check(self) -> Result<Self, SpecError> {
        if self.rows == 0 || self.cols == 0 {
            return Err(SpecError::SizeZero);
        }
        if self.rows > Self::MAX_ROWS || self.cols > Self::MAX_COLS {
            return Err(SpecError::SizeOverLimit {
                rows: self.rows,
                cols: self.cols,
            });
        }
        Ok(self)
    }
}

impl Default for Size {
    /// 24×80, the classic terminal.
    fn default() -> Self {
        Self { rows: 24, cols: 80 }
    }
}

/// How the process is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// In a pseudo-terminal: interactive programs, TUIs.
    #[default]
    Pty,
    /// On stdin/stdout/stderr pipes; every line is output, and a JSON line is also a `json`
    /// event (`claude -p --output-format stream-json`).
    Pipe,
    /// On pipes, speaking an agent's structured protocol (needs an agent profile; for `claude`:
    /// stream-json in and out with permission requests on stdout, see `stream_json`): every
    /// stdout line is logged as it is, and messages, tool calls, results and permission
    /// requests become typed events.
    #[serde(alias = "stream-json")]
    StreamJson,
}

/// When a session's process is started again after it exits by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Never: the session ends Stopped with its exit recorded.
    #[default]
    Never,
    /// Only after a failure: a non-zero exit code or death by a signal.
    #[serde(alias = "on-failure")]
    OnFailure,
    /// After every exit that was not requested by a stop.
    Always,
}

/// Everything needed to start one agent process. In JSON every field but `argv` may be left
/// out and takes its default. Its `Debug` shows the environment's names, not their values
/// (the session's hook token is one; a user's API key may be another).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSpec {
    /// Unique name; generated from the program name when absent.
    pub name: Option<String>,
    /// Program and arguments, spawned directly (never through a shell string).
    pub argv: Vec<String>,
    /// Working directory; corral's own when absent.
    pub cwd: Option<PathBuf>,
    /// Extra environment, applied over the documented clean base (see `env.rs`).
    pub env: Vec<(String, String)>,
    /// Initial terminal size (PTY mode).
    pub size: Size,
    /// PTY or pipes.
    pub mode: Mode,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Delay before restarts.
    pub backoff: Backoff,
    /// Restart intensity: exceeding it ends the session Failed.
    pub intensity: Intensity,
    /// Signal that asks the process to stop (name, e.g. "SIGHUP").
    pub stop_signal: String,
    /// Time between the stop signal and SIGKILL of the whole process tree (in JSON: seconds,
    /// or serde's `{"secs", "nanos"}`).
    #[serde(deserialize_with = "corral_runtime::seconds::deserialize")]
    pub grace: Duration,
    /// Agent profile name (e.g. "claude"), if any.
    pub agent: Option<String>,
    /// The command an agent profile's hooks run (argv; e.g. `[<corral binary>, "hook"]`). Set
    /// by the server; a profile that needs it and lacks it is refused.
    pub hook_command: Option<Vec<String>>,
    /// Output bytes kept in memory for viewers (the Ring's capacity).
    pub ring_capacity: usize,
}

impl Default for SessionSpec {
    /// Every default, with an empty argv (which `spawn` refuses).
    fn default() -> Self {
        Self::new(Vec::<String>::new())
    }
}

impl std::fmt::Debug for SessionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<String> = self.env.iter().map(|(k, _)| format!("{k}=…")).collect();
        f.debug_struct("SessionSpec")
            .field("name", &self.name)
            .field("argv", &self.argv)
            .field("cwd", &self.cwd)
            .field("env", &env)
            .field("size", &self.size)
            .field("mode", &self.mode)
            .field("restart", &self.restart)
            .field("backoff", &self.backoff)
            .field("intensity", &self.intensity)
            .field("stop_signal", &self.stop_signal)
            .field("grace", &self.grace)
            .field("agent", &self.agent)
            .field("hook_command", &self.hook_command)
            .field("ring_capacity", &self.ring_capacity)
            .finish()
    }
}

impl SessionSpec {
    /// Default stop signal: interactive bash ignores SIGTERM; SIGHUP is the terminal-natural stop.
    pub const DEFAULT_STOP_SIGNAL: &'static str = "SIGHUP";
    /// Default grace period.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
    /// Default ring capacity: 1 MiB (allocated lazily).
    pub const DEFAULT_RING_CAPACITY: usize = 1 << 20;
    /// The longest grace a stop waits (a stop of the API is clamped to it too).
    pub const MAX_GRACE: Duration = Duration::from_secs(3600);
    /// The smallest and largest Ring (a session's memory of its output).
    pub const RING_CAPACITY: std::ops::RangeInclusive<usize> = 4096..=(1 << 30);
    /// The longest restart delay a backoff may ask for.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

    /// The stop signal: a name with or without its `SIG` (`SIGTERM`, `TERM`, `term`).
    pub fn stop_signal(&self) -> Result<nix::sys::signal::Signal, SpecError> {
        let name = self.stop_signal.trim().to_ascii_uppercase();
        let full = if name.starts_with("SIG") {
            name
        } else {
            format!("SIG{name}")
        };
        full.parse()
            .map_err(|_| SpecError::UnknownStopSignal(self.stop_signal.clone()))
    }

    /// Refuses what could never start, before anything is made for it: an unknown stop
    /// signal, a grace, Ring or backoff out of bounds, an agent without the hook command it needs, `stream_json` without an agent that
    /// speaks it. (Whether the agent's profile exists is `agent::Profile::parse`'s to say.)
    pub fn check(&self) -> Result<(), SpecError> {
        self.stop_signal()?;
        if self.grace > Self::MAX_GRACE {
            return Err(SpecError::GraceOverLimit(self.grace));
        }
        if !Self::RING_CAPACITY.contains(&self.ring_capacity) {
            return Err(SpecError::RingCapacity(self.ring_capacity));
        }
        let b = &self.backoff;
        if b.initial > Self::MAX_BACKOFF
            || b.max > Self::MAX_BACKOFF
            || b.reset_after > Self::MAX_BACKOFF
        {
            return Err(SpecError::BackoffTooLong);
        }
        if !(1.0..=1000.0).contains(&b.multiplier) || !(0.0..=1.0).contains(&b.jitter) {
            return Err(SpecError::BackoffShape {
                multiplier: b.multiplier.to_string(),
                jitter: b.jitter.to_string(),
            });
        }
        let profile = self.agent.as_deref().filter(|a| !a.is_empty());
        if profile.is_some() && self.hook_command.is_none() {
            return Err(SpecError::AgentWithoutHookCommand);
        }
        if self.mode == Mode::StreamJson && profile.is_none() {
            return Err(SpecError::StreamJsonWithoutAgent);
        }
        Ok(())
    }

    /// A PTY session running `argv` with every default.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        Self {
            name: None,
            argv: argv.into_iter().map(Into::into).collect(),
            cwd: None,
            env: Vec::new(),
            size: Size::default(),
            mode: Mode::Pty,
            restart: RestartPolicy::Never,
            backoff: Self::default_backoff(),
            intensity: Self::default_intensity(),
            stop_signal: Self::DEFAULT_STOP_SIGNAL.into(),
            grace: Self::DEFAULT_GRACE,
            agent: None,
            hook_command: None,
            ring_capacity: Self::DEFAULT_RING_CAPACITY,
        }
    }

    /// Session restarts: 200 ms doubling to 30 s, ±10 % jitter, reset after 30 s of running.
    pub fn default_backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.1,
            reset_after: Duration::from_secs(30),
        }
    }

    /// Session intensity: 5 restarts in 60 s, then Failed.
    pub fn default_intensity() -> Intensity {
        Intensity {
            max_restarts: 5,
            period: Duration::from_secs(60),
        }
    }

    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the restart policy.
    pub fn restart(mut self, restart: RestartPolicy) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the grace period.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets the agent profile.
    pub fn agent(mut self, agent: impl Into<String>) -> Self {
        self.agent = Some(agent.into());
        self
    }

    /// Sets the ring capacity.
    pub fn ring_capacity(mut self, bytes: usize) -> Self {
        self.ring_capacity = bytes;
        self
    }

    /// Sets the backoff policy.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the restart intensity.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.intensity = Intensity {
            max_restarts,
            period,
        };
        self
    }

    /// Sets the terminal size.
    pub fn size(mut self, rows: u16, cols: u16) -> Self {
        self.size = Size { rows, cols };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec's `Debug` (what a `?spec` in a log line would print) names its environment but
    /// shows none of its values: the hook token is one of them.
    #[test]
    fn a_spec_s_debug_shows_no_environment_value() {
        let spec = SessionSpec::new(["claude"])
            .env("CORRAL_HOOK_TOKEN", "corral_0123_s3cr3t")
            .env("ANTHROPIC_API_KEY", "sk-ant-k3y");
        let shown = format!("{spec:?}");
        assert!(shown.contains("CORRAL_HOOK_TOKEN=…"), "{shown}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("k3y"),
            "{shown}"
        );
    }

    /// Bounds a caller could overflow a deadline or the memory with are refused with a reason
    /// (a grace of Duration::MAX panicked the caller's task; a Ring of usize::MAX grew without
    /// bound).
    #[test]
    fn out_of_bounds_specs_are_refused() {
        let ok = SessionSpec::new(["true"]);
        assert!(ok.check().is_ok());
        let cases = [
            ok.clone().grace(Duration::MAX),
            ok.clone()
                .grace(SessionSpec::MAX_GRACE + Duration::from_secs(1)),
            ok.clone().ring_capacity(0),
            ok.clone().ring_capacity(usize::MAX),
            ok.clone().backoff(Backoff {
                initial: Duration::MAX,
                ..SessionSpec::default_backoff()
            }),
            ok.clone().backoff(Backoff {
                multiplier: 1e300,
                ..SessionSpec::default_backoff()
            }),
            ok.clone().backoff(Backoff {
                jitter: f64::NAN,
                ..SessionSpec::default_backoff()
            }),
        ];
        for spec in cases {
            assert!(spec.check().is_err(), "accepted: {spec:?}");
        }
        assert!(ok.clone().grace(SessionSpec::MAX_GRACE).check().is_ok());
        assert!(ok.ring_capacity(4096).check().is_ok());
    }
}
