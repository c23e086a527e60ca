//! Agent profiles: what the `claude` profile adds to a session's program — its per-session
//! settings file, whose hooks run `corral hook` by the absolute path of this corral, and in
//! stream-json mode the flags of Claude's structured protocol.

use super::*;

/// What the claude profile adds in stream-json mode: print mode, stream-json both ways (which
/// needs `--verbose`), and permission requests as control requests on stdout.
pub const STREAM_JSON_FLAGS: &[&str] = &[
    "-p",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
    "--verbose",
    "--permission-prompt-tool",
    "stdio",
];

/// A known agent profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Claude Code.
    Claude,
}

impl Profile {
    /// The profile named in a spec, if known; an unknown name is an error naming it.
    pub fn parse(name: Option<&str>) -> Result<Option<Profile>, crate::spec::SpecError> {
        match name {
            None => Ok(None),
            Some("claude") => Ok(Some(Profile::Claude)),
            Some(other) => Err(crate::spec::SpecError::UnknownAgent(other.to_string())),
        }
    }

    /// Writes the profile's files into the session's private dir and returns the argv to run:
    /// `argv` with `--settings <file>` after the program, on a restart with a known agent
    /// session id `--resume <id>` too, and in stream-json mode the flags of the structured
    /// protocol ([`STREAM_JSON_FLAGS`]; those already given are not repeated). An empty `argv`
    /// is an `InvalidInput` error.
    pub fn prepare(
        self,
        argv: &[String],
        mode: Mode,
        private_dir: &Path,
        hook_command: &[String],
        resume: Option<&str>,
    ) -> std::io::Result<Vec<String>> {
        match self {
            Profile::Claude => {
                let Some(program) = argv.first() else {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "an agent profile needs a program to run (argv is empty)",
                    ));
                };
                let settings = write_claude_settings(private_dir, hook_command)?;
                let mut out = Vec::with_capacity(argv.len() + 4);
                out.push(program.clone());
                out.push("--settings".into());
                out.push(settings.display().to_string());
                if let Some(id) = resume
                    && !argv.iter().any(|a| a == "--resume" || a == "--continue")
                {
                    out.push("--resume".into());
                    out.push(id.to_string());
                }
                if mode == Mode::StreamJson {
                    let mut flags = STREAM_JSON_FLAGS.iter();
                    while let Some(flag) = flags.next() {
                        let value = if flag.starts_with("--") && !matches!(*flag, "--verbose") {
                            flags.next()
                        } else {
                            None
                        };
                        if !argv.iter().any(|a| a == flag) {
                            out.push(flag.to_string());
                            out.extend(value.map(|v| v.to_string()));
                        }
                    }
                }
                out.extend_from_slice(&argv[1..]);
                Ok(out)
            }
        }
    }
}

/// Writes `claude-settings.json` with a command hook per event; returns its path.
pub(super) fn write_claude_settings(
    dir: &Path,
    hook_command: &[String],
) -> std::io::Result<PathBuf> {
    let command = hook_command
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let mut hooks = serde_json::Map::new();
    for event in CLAUDE_HOOK_EVENTS {
        // A PermissionRequest hook waits for an answer from the API (bounded); the others
        // return at once.
        let timeout = if *event == "PermissionRequest" {
            PERMISSION_WAIT_MAX.as_secs() + 10
        } else {
            5
        };
        let entry = json!([{ "matcher": "*", "hooks": [{ "type": "command", "command": command, "timeout": timeout }] }]);
        hooks.insert((*event).to_string(), entry);
    }
    let path = dir.join("claude-settings.json");
    let text =
        serde_json::to_vec_pretty(&json!({ "hooks": hooks })).map_err(std::io::Error::other)?;
    // Owner-only like everything in the session's private dir.
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &text))?;
    Ok(path)
}

/// Quotes one argument for the shell Claude Code runs hook commands with. The only input is the
/// path of corral's own binary (never user input); quoting keeps spaces in it safe.
pub(super) fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
