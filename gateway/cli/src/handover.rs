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
        if Instant::now() > deadline {
            bail!(
                "the new server (pid {}) did not answer within {WAIT:?}; see its log",
                h.new_pid
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks the server to leave, then waits until it no longer answers.
pub async fn shutdown(client: &Client, keep_sessions: bool) -> anyhow::Result<()> {
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
