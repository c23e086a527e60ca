//! Handover: `corral upgrade` and `corral shutdown`, the two ways to make a server leave on
//! purpose from the command line (the server's side is corral-server's `upgrade` module).

use std::time::{Duration, Instant};

use anyhow::bail;
use corral_client::Client;

/// How long the CLI waits for the successor to answer, or the server to be gone.
const WAIT: Duration = Duration::from_secs(60);

/// Asks for the handover, then waits until the successor answers; prints both versions.
pub async fn upgrade(client: &Client) -> anyhow::Result<()> {
    let h = client.upgrade().await?;
    let deadline = Instant::now() + WAIT;
    // On this machine, the successor is watched: one that exits before it answers (killed,
    // crashed) is said at once — the old server has handed over and left, so none runs now.
    // (Opened after the answer: a successor gone by then is not found, and the wait says so.)
    let gone = || {
        anyhow::anyhow!(
            "the new server (pid {}) exited before it answered, after the old one had handed \
             over: no server runs for this data dir now. The sessions run on under their \
             holders: start one (`corral serve`) and it takes them back; why it exited is in \
             its log",
            h.new_pid
        )
    };
    let successor = match (&client.endpoint, i32::try_from(h.new_pid)) {
        (corral_client::Endpoint::Unix(_), Ok(pid)) => {
            match corral_actors::process::pidfd::PidFd::open(pid) {
                Ok(p) => Some(p),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Err(gone()),
                Err(_) => None,
            }
        }
        _ => None,
    };
    loop {
        // The old server has stopped answering once it left; the socket (TCP: the same one,
        // inherited; Unix: bound again) then reaches the successor.
        if let Ok(health) = client.health().await
            && health.pid == h.new_pid
        {
            println!(
                "upgraded: corral {} (pid {}) → corral {} (pid {})",
                h.old.version, h.old.pid, health.version, h.new_pid
            );
            return Ok(());
        }
        if successor.as_ref().is_some_and(|p| p.is_exited()) {
            return Err(gone());
        }
        if Instant::now() > deadline {
            bail!(
                "the new server (pid {}) did not answer within {WAIT:?}; see its log",
                h.new_pid
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks the server to leave, then waits until it no longer answers — and, for a server on
/// this machine (the data dir's socket), until its process has exited: it stops answering
/// before it has released the data dir, and `corral shutdown && corral serve` must not find
/// the old server still holding it.
pub async fn shutdown(client: &Client, keep_sessions: bool) -> anyhow::Result<()> {
    // Its pidfd is opened while it surely runs, so a reused pid can never be mistaken for it.
    let local = match client.endpoint {
        corral_client::Endpoint::Unix(_) => client
            .health()
            .await
            .ok()
            .and_then(|h| i32::try_from(h.pid).ok())
            .and_then(|pid| corral_actors::process::pidfd::PidFd::open(pid).ok()),
        corral_client::Endpoint::Tcp(_) => None,
    };
    let server = client.shutdown(keep_sessions).await?;
    let deadline = Instant::now() + WAIT;
    while client
        .health()
        .await
        .is_ok_and(|h| h.pid == server.pid || h.pid == 0)
    {
        if Instant::now() > deadline {
            bail!("the server (pid {}) is still up after {WAIT:?}", server.pid);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(pidfd) = local.filter(|p| i64::from(p.pid()) == i64::from(server.pid))
        && tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            pidfd.exited(),
        )
        .await
        .is_err()
    {
        bail!(
            "the server (pid {}) stopped answering but is still running after {WAIT:?}",
            server.pid
        );
    }
    // A server that ended cleanly removed its `server.json`; one still naming it means it was
    // killed before it finished (say so: it did not stop what it was asked to).
    if let corral_client::Endpoint::Unix(socket) = &client.endpoint
        && let Some(dir) = socket.parent()
        && corral_server::datadir::read_server_json(dir).is_ok_and(|s| s.pid == server.pid)
    {
        bail!(
            "the server (pid {}) ended before it finished stopping (killed?): the next `corral serve` finishes what was asked",
            server.pid
        );
    }
    if keep_sessions {
        println!(
            "corral {} (pid {}) stopped; sessions keep running under their holders",
            server.version, server.pid
        );
    } else {
        println!(
            "corral {} (pid {}) stopped with its sessions",
            server.version, server.pid
        );
    }
    Ok(())
}
