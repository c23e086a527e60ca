//! Pipe: a command whose output goes into a pipe that closes early (`corral ps | head -3`,
//! `corral logs work | grep -m1 error`) ends quietly with status 141, as a Unix tool that
//! SIGPIPE ends does — not with a panic and its backtrace, nor "Broken pipe" on stderr.
//!
//! SIGPIPE itself stays ignored (Rust's default): the client also writes to the server's
//! socket, and a server that goes away mid-write must be an error the user reads, not a
//! silent death. So only standard output is checked, and only when a write to it failed.

use std::process::ExitCode;

/// The status a shell reports for a tool that SIGPIPE ended (128 + 13).
pub const STATUS: u8 = 141;

/// Installs a panic hook for the panic `println!` raises when standard output cannot be written
/// ("failed printing to stdout: Broken pipe"): on a closed pipe the process ends quietly with
/// [`STATUS`]; on any other failure it says why in one line and exits 1. Any other panic goes
/// to the hook that was there.
pub fn quiet_on_closed_stdout() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if let Some(why) = message.strip_prefix("failed printing to stdout") {
            if stdout_closed() {
                std::process::exit(STATUS.into());
            }
            // Any other failure (a full disk: `corral ps --json > state.json`) is one line and
            // status 1, as every other error — not a panic and its backtrace. What the command
            // did on the server (a spawn) is done: only its answer could not be written.
            eprintln!(
                "corral: cannot write the output: {}",
                why.trim_start_matches(':').trim()
            );
            std::process::exit(1);
        }
        previous(info);
    }));
}

/// What a failed command exits with: [`STATUS`], quietly, when its standard output was closed
/// (a write to it is what failed); otherwise the error is printed and the status is 1.
pub fn failed(command: &str, e: &anyhow::Error) -> ExitCode {
    if stdout_closed() {
        return ExitCode::from(STATUS);
    }
    eprintln!("{command}: {}", describe(e));
    ExitCode::FAILURE
}

/// An error and its causes in one line, each said once: a cause whose words its error already
/// ends with (`HTTP: connection reset` over `connection reset`) is not said twice.
pub fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Whether standard output is a pipe nobody reads any more (poll says POLLERR on the write
/// end of a pipe whose read end is closed).
fn stdout_closed() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1, no timeout (returns at once).
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready == 1 && fd.revents & libc::POLLERR != 0
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[derive(Debug, thiserror::Error)]
    #[error("HTTP: {0}")]
    struct Wrapper(#[from] std::io::Error);

    /// A cause its error already ends with is said once; a different one is added.
    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::other("connection reset");
        let e = anyhow::Error::from(Wrapper(io)).context("stop failed");
        assert_eq!(describe(&e), "stop failed: HTTP: connection reset");
    }
}
