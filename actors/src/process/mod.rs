//! Linux processes: the one place in corral that knows how processes are found, signalled,
//! stopped and reaped.
//!
//! The rest of corral deals in sessions and never looks inside; everything about pids, process
//! groups, sessions, `/proc`, pidfds and `waitpid` lives here (DESIGN.md §5), so the rules are
//! applied the same way everywhere:
//!
//! - name a process by a pidfd ([`PidFd`]) or by (pid, start time, boot id)
//!   ([`ProcessIdentity`]), never by a bare pid that may have been recycled, and never by name;
//! - a session's processes are found in `/proc` by descent, session id, process group and
//!   environment marker ([`SessionTree`]);
//! - stopping is signal → grace → SIGKILL of the whole tree, rescanned until empty ([`sweep`]);
//! - every zombie is reaped exactly once, by whoever owns its exit status ([`reaper`]);
//! - nothing here blocks a tokio worker: waits are pidfd readiness, reaps are `WNOHANG`.
//!
//! Files: [`pidfd`] (race-free handle on one process), [`status`] (exit statuses, `try_reap`),
//! [`procfs`] (`/proc` parsing, identities), [`tree`] (session membership), [`sweep`] (stop
//! rules), [`reaper`] (zombie reaping and status ownership), [`limits`] (fd and PTY limits), [`leader`] (what a main process does
//! between fork and exec).

pub mod leader;
pub mod limits;
pub mod pidfd;
pub mod procfs;
pub mod reaper;
pub mod status;
pub mod sweep;
pub mod tree;

pub use limits::{pty_max, raise_nofile};
pub use pidfd::{Delivery, ExitWatch, PidFd};
pub use procfs::{ProcStat, ProcessIdentity};
pub use reaper::{Reaper, ReaperMsg, SpawnGuard};
pub use status::{ExitStatus, ReapError, try_reap};
pub use sweep::{SweepReport, kill_all, kill_all_now, signal_group, terminate};
pub use tree::{MARKER_KEY, SessionTree};
