//! Token log: the viewer and driver tokens a server issued, on disk, so they survive a restart
//! and `corral upgrade` — a phone's read-only page and a script's driver token keep working,
//! and a viewer reconnects after an upgrade as the admin's does.
//!
//! `tokens.log` in the 0700 data dir, mode 0600, one JSON object per line, appended and synced
//! as tokens are issued: `{"id","sha256","scope","session"}` for a token (its SHA-256, never
//! the token itself), `{"revoke":session}` when a session's tokens are revoked,
//! `{"revoke_token":id}` when one token is (`corral token revoke`). At start it is
//! read back (a torn last line, from a crash mid-append, is skipped), the tokens of sessions
//! that no longer exist are dropped, and the file is rewritten with what is left (atomically),
//! and a running server rewrites it the same way once it holds more than 4096 lines and twice
//! as many as there are live tokens: it stays within a small multiple of the live tokens. The admin token has its own
//! file (`token`); hook tokens live in their session's environment.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::protocol::TokenScope;

/// The file's name in the data dir.
pub const FILE: &str = "tokens.log";

/// Lines the file may hold before a running server rewrites it with only the live tokens (when
/// it holds more than twice as many lines as live tokens): issues and revocations on sessions
/// that come and go never grow it past that.
const COMPACT_AFTER: usize = 4096;

/// One line of the log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    /// A token was issued.
    Issued {
        id: String,
        sha256: String,
        scope: TokenScope,
        session: Uuid,
    },
    /// Every token on this session was revoked.
    Revoked { revoke: Uuid },
    /// One token was revoked (`corral token revoke`).
    RevokedOne { revoke_token: String },
}

/// A recorded token: its id, its SHA-256, what it may do, on which session.
pub type Entry = (String, [u8; 32], TokenScope, Uuid);

/// The open log and the tokens it held at start.
#[derive(Debug)]
pub struct TokenLog {
    path: PathBuf,
    /// The file, open for appends, and the lines it holds.
    file: Mutex<(File, usize)>,
    entries: Vec<Entry>,
}

impl TokenLog {
    /// Reads `dir/tokens.log` back, keeps the tokens of sessions for which `exists` holds (the
    /// newest `max` of them), rewrites the file with them and opens it for appends. Blocking
    /// file I/O.
    pub fn open(dir: &Path, max: usize, exists: impl Fn(Uuid) -> bool) -> io::Result<TokenLog> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        // id → (digest, scope, session, line number).
        let mut kept: HashMap<String, ([u8; 32], TokenScope, Uuid, usize)> = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            match serde_json::from_str::<Line>(line) {
                Ok(Line::Issued {
                    id,
                    sha256,
                    scope,
                    session,
                }) => match hex32(&sha256) {
                    Some(d) => {
                        kept.insert(id, (d, scope, session, n));
                    }
                    None => tracing::warn!(line = n + 1, "token log: a malformed digest; skipped"),
                },
                Ok(Line::Revoked { revoke }) => {
                    kept.retain(|_, (_, _, session, _)| *session != revoke);
                }
                Ok(Line::RevokedOne { revoke_token }) => {
                    kept.remove(&revoke_token);
                }
                // A crash in the middle of an append leaves a torn last line.
                Err(e) => {
                    tracing::warn!(line = n + 1, error = %e, "token log: an unreadable line; skipped")
                }
            }
        }
        let mut ordered: Vec<(usize, Entry)> = kept
            .into_iter()
            .filter(|(_, (_, _, session, _))| exists(*session))
            .map(|(id, (d, scope, session, n))| (n, (id, d, scope, session)))
            .collect();
        ordered.sort_by_key(|(n, _)| *n);
        // The newest are kept if there are ever too many (the bound of the token store).
        let skip = ordered.len().saturating_sub(max);
        let entries: Vec<Entry> = ordered.into_iter().skip(skip).map(|(_, e)| e).collect();
        let file = rewrite(&path, &entries)?;
        Ok(TokenLog {
            file: Mutex::new((file, entries.len())),
            path,
            entries,
        })
    }

    /// Rewrites the file with only `live()`'s tokens once it holds more than [`COMPACT_AFTER`]
    /// lines and twice as many as there are live tokens. Blocking file I/O.
    pub fn compact_if_due(&self, live: impl FnOnce() -> Vec<Entry>) -> io::Result<()> {
        let mut file = self.file.lock();
        if file.1 <= COMPACT_AFTER {
            return Ok(());
        }
        let live = live();
        if file.1 <= 2 * live.len() {
            return Ok(());
        }
        *file = (rewrite(&self.path, &live)?, live.len());
        Ok(())
    }

    /// The tokens read back at start.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Records an issued viewer or driver token (synced before it returns). Blocking file I/O.
    pub fn issued(&self, entry: &Entry) -> io::Result<()> {
        self.append(&line_of(entry)?)
    }

    /// Records that every token on `session` was revoked. Blocking file I/O.
    pub fn revoked(&self, session: Uuid) -> io::Result<()> {
        let mut line = serde_json::to_vec(&Line::Revoked { revoke: session })?;
        line.push(b'\n');
        self.append(&line)
    }

    /// Records that the token `id` was revoked. Blocking file I/O.
    pub fn revoked_one(&self, id: &str) -> io::Result<()> {
        let mut line = serde_json::to_vec(&Line::RevokedOne {
            revoke_token: id.to_string(),
        })?;
        line.push(b'\n');
        self.append(&line)
    }

    fn append(&self, line: &[u8]) -> io::Result<()> {
        let mut file = self.file.lock();
        file.0.write_all(line)?;
        file.1 += 1;
        file.0.sync_data()
    }
}

/// Replaces the file at `path` with `entries` (atomically) and opens it for appends.
fn rewrite(path: &Path, entries: &[Entry]) -> io::Result<File> {
    let mut compact = Vec::new();
    for e in entries {
        compact.extend_from_slice(&line_of(e)?);
    }
    crate::atomic::write_atomic(path, &compact, 0o600)?;
    OpenOptions::new().append(true).mode(0o600).open(path)
}

/// One `Issued` line, newline included.
fn line_of((id, digest, scope, session): &Entry) -> io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(&Line::Issued {
        id: id.clone(),
        sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
        scope: *scope,
        session: *session,
    })?;
    line.push(b'\n');
    Ok(line)
}

/// 64 hex digits as 32 bytes.
fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
