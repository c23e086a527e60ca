//! `claude-stub`: the tests' stub of the Anthropic Messages API as a program of its own, for
//! trying the real Claude Code under corral by hand, offline (docs/operations.md, "Claude Code
//! without an account"). It prepares a HOME whose `.claude.json` skips Claude's first-run
//! screens for one project, prints the `corral spawn` that starts Claude with the environment
//! it needs (a session's environment is its spec's: `--env`), and answers until Ctrl-C: a
//! request that offers the Bash tool gets a `tool_use` running `--command` (so Claude asks a
//! permission), anything else a short text.
//!
//!     cargo run -p corral-tests --bin claude-stub -- --home /tmp/h --project /tmp/p \
//!         [--command 'touch made-by-claude']

use std::path::PathBuf;

use corral_tests::claude_stub::{Stub, claude_env, prepare_home};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut home, mut project, mut command) = (None, None, "touch made-by-claude".to_string());
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            fail(&format!("{flag} needs a value"));
        };
        match flag.as_str() {
            "--home" => home = Some(PathBuf::from(value)),
            "--project" => project = Some(PathBuf::from(value)),
            "--command" => command = value,
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    let (Some(home), Some(project)) = (home, project) else {
        fail("--home and --project are needed");
    };
    for dir in [&home, &project] {
        if let Err(e) = std::fs::create_dir_all(dir) {
            fail(&format!("{}: {e}", dir.display()));
        }
    }
    let project = match project.canonicalize() {
        Ok(p) => p,
        Err(e) => fail(&format!("{}: {e}", project.display())),
    };
    prepare_home(&home, &project);
    let stub = Stub::start(command).await;
    println!("# the Messages API stub listens on 127.0.0.1:{}", stub.port);
    // A session's environment is its spec's, not the shell's: each variable goes as --env.
    let cache = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/claude-cache");
    let claude = cache
        .canonicalize()
        .unwrap_or(cache)
        .join("node_modules/.bin/claude");
    println!("# start Claude Code under corral with:");
    let mut spawn = format!(
        "corral spawn --name agent --agent claude --cwd {}",
        quoted(&project.display().to_string())
    );
    for var in claude_env(&home, &stub) {
        spawn.push_str(&format!(" --env {}", quoted(&var)));
    }
    println!("{spawn} -- {}", quoted(&claude.display().to_string()));
    if let Err(e) = tokio::signal::ctrl_c().await {
        fail(&format!("waiting for Ctrl-C: {e}"));
    }
    println!("# {} requests answered", stub.requests().len());
    stub.stop();
}

/// `text` as one word for a POSIX shell: as it is when it is plain, else in single quotes.
fn quoted(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-=:@+,".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn fail(why: &str) -> ! {
    eprintln!("claude-stub: {why}");
    std::process::exit(2);
}
