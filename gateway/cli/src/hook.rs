//! Hook: `corral hook`, run by Claude Code for every hook event of a session. It reads the
//! event JSON on stdin and posts it to the session's server with the session's hook token,
//! bounded in time, and always exits 0: a hook must never block or fail the agent.

use std::time::Duration;

use corral_client::Client;

/// The whole hook call may take this long.
const TIMEOUT: Duration = Duration::from_secs(2);

/// `corral hook`: best effort, bounded in time, silent on the agent's terminal.
pub fn hook() {
    use std::io::Read;
    let mut body = Vec::new();
    if let Err(e) = std::io::stdin().take(1 << 20).read_to_end(&mut body) {
        eprintln!("corral hook: cannot read stdin: {e}");
        return;
    }
    let (Ok(session), Ok(url), Ok(token)) = (
        std::env::var("CORRAL_SESSION_ID"),
        std::env::var("CORRAL_URL"),
        std::env::var("CORRAL_HOOK_TOKEN"),
    ) else {
        eprintln!("corral hook: not inside a corral session (CORRAL_* variables missing)");
        return;
    };
    let client = match Client::tcp(&url, token) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("corral hook: {e}");
            return;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("corral hook: cannot start a runtime: {e}");
            return;
        }
    };
    let post = async { tokio::time::timeout(TIMEOUT, client.post_hook(&session, body)).await };
    match rt.block_on(post) {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => eprintln!("corral hook: {e}"),
        Err(_) => eprintln!("corral hook: the server did not answer within {TIMEOUT:?}"),
    }
}
