//! Tokens and what they allow. A token is `corral_<id>_<secret>`: the id finds the grant in a
//! map, and the SHA-256 of the presented token is compared in constant time with the one kept,
//! so lookups never leak the secret through timing and this map keeps no token in the clear
//! (no viewer or driver token is kept in the clear anywhere; a session's hook token is in its
//! program's environment, so also in its recorded spec, and the admin token in the data dir's
//! `token` file). Tokens are never logged; only their ids are (the `Debug` of every type that
//! carries one leaves it out). Viewer and driver tokens are
//! also written to the data dir's token log ([`crate::token_log`]), so they survive a restart
//! and `corral upgrade`.

use std::collections::HashMap;

use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::protocol::TokenScope;
use crate::token_log::TokenLog;

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Everything.
    Admin,
    /// Watch one session.
    Read(Uuid),
    /// Watch and drive one session.
    Write(Uuid),
    /// Post hook events for one session (and nothing else).
    Hook(Uuid),
}

impl Grant {
    /// Whether this grant may watch `session`.
    pub fn can_read(&self, session: Uuid) -> bool {
        match self {
            Grant::Admin => true,
            Grant::Read(s) | Grant::Write(s) => *s == session,
            Grant::Hook(_) => false,
        }
    }

    /// Whether this grant may send input to / resize `session`.
    pub fn can_write(&self, session: Uuid) -> bool {
        match self {
            Grant::Admin => true,
            Grant::Write(s) => *s == session,
            _ => false,
        }
    }

    /// Whether this grant may manage sessions (list all, spawn, stop, remove, tree).
    pub fn is_admin(&self) -> bool {
        matches!(self, Grant::Admin)
    }

    /// Whether this grant may post hook events for `session`.
    pub fn can_hook(&self, session: Uuid) -> bool {
        match self {
            Grant::Admin => true,
            Grant::Hook(s) => *s == session,
            _ => false,
        }
    }
}

impl TokenScope {
    /// What a grant is recorded as in the token log (only viewer and driver grants are).
    fn of(grant: &Grant) -> Option<(TokenScope, Uuid)> {
        match grant {
            Grant::Read(s) => Some((TokenScope::Read, *s)),
            Grant::Write(s) => Some((TokenScope::Write, *s)),
            Grant::Admin | Grant::Hook(_) => None,
        }
    }

    /// The grant a token of this scope has on `session`.
    pub fn grant(self, session: Uuid) -> Grant {
        match self {
            TokenScope::Read => Grant::Read(session),
            TokenScope::Write => Grant::Write(session),
        }
    }
}

/// Bound on issued tokens.
pub const MAX_TOKENS: usize = 100_000;

/// A fresh random token with the given id.
pub fn new_secret(id: &str) -> String {
    format!(
        "corral_{id}_{}{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    )
}

/// A fresh random id of 12 hex digits (a token's, a permission question's): unique enough to
/// name one thing among a server's and its successors' without a counter.
pub fn random_id() -> String {
    Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// The SHA-256 of a token: what is kept of it.
pub fn digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(token.as_bytes()));
    out
}

/// A token's id (`corral_<id>_<secret>`), if it has that form; ids are not secret.
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("corral_")?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && secret.len() >= 32).then_some(id)
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error(
        "missing token: use 'Authorization: Bearer <token>' or the corral.token.<token> subprotocol"
    )]
    Missing,
    /// The token is not valid.
    #[error("invalid token")]
    Invalid,
    /// Too many tokens issued.
    #[error("token limit reached ({MAX_TOKENS})")]
    Full,
    /// The token could not be recorded in the data dir, so it was not issued.
    #[error("could not record the token: {0}")]
    Unrecorded(String),
}

/// Every valid token.
#[derive(Debug)]
pub struct Tokens {
    /// id → (the token's digest, grant).
    by_id: RwLock<HashMap<String, ([u8; 32], Grant)>>,
    /// Where viewer and driver tokens are recorded (none: they live as long as this process).
    log: Option<TokenLog>,
}

impl Tokens {
    /// A store whose admin token is `admin`.
    pub fn new(admin: String) -> Self {
        let mut by_id = HashMap::new();
        let id = token_id(&admin).unwrap_or("admin").to_string();
        by_id.insert(id, (digest(&admin), Grant::Admin));
        Self {
            by_id: RwLock::new(by_id),
            log: None,
        }
    }

    /// Like [`new`](Self::new), with the viewer and driver tokens of `log` valid again and every
    /// new one recorded there.
    pub fn with_log(admin: String, log: TokenLog) -> Self {
        let mut tokens = Self::new(admin);
        {
            let mut map = tokens.by_id.write();
            for (id, digest, scope, session) in log.entries() {
                if map.len() >= MAX_TOKENS {
                    break;
                }
                map.insert(id.clone(), (*digest, scope.grant(*session)));
            }
        }
        tokens.log = Some(log);
        tokens
    }

    /// Checks a presented token.
    pub fn check(&self, presented: Option<&str>) -> Result<Grant, AuthError> {
        let token = presented.ok_or(AuthError::Missing)?;
        // A token not of the `corral_<id>_<secret>` shape can only be an admin token given to
        // `new` as it is (an embedding host's own): it is kept under "admin", as `new` keeps it.
        let id = token_id(token).unwrap_or("admin");
        let map = self.by_id.read();
        match map.get(id) {
            Some((kept, grant)) if ct_eq(kept, &digest(token)) => Ok(grant.clone()),
            _ => Err(AuthError::Invalid),
        }
    }

    /// Issues a new token with `grant`. A viewer or driver token is recorded in the token log
    /// first (blocking file I/O: call it off the runtime's workers), and not issued if that
    /// fails; a hook token is kept in memory only (no file is touched: a spawn issues one on a
    /// runtime worker).
    pub fn issue(&self, grant: Grant) -> Result<String, AuthError> {
        if self.by_id.read().len() >= MAX_TOKENS {
            return Err(AuthError::Full);
        }
        let id = random_id();
        let token = new_secret(&id);
        let kept = digest(&token);
        let recorded = TokenScope::of(&grant);
        if let (Some(log), Some((scope, session))) = (&self.log, recorded) {
            log.issued(&(id.clone(), kept, scope, session))
                .map_err(|e| AuthError::Unrecorded(e.to_string()))?;
        }
        {
            let mut map = self.by_id.write();
            if map.len() >= MAX_TOKENS {
                return Err(AuthError::Full);
            }
            map.insert(id, (kept, grant));
        }
        // Only a recorded token grows the log.
        if recorded.is_some() {
            self.compact_log();
        }
        Ok(token)
    }

    /// The recorded (viewer and driver) tokens now valid, as the token log holds them.
    fn recorded(&self) -> Vec<crate::token_log::Entry> {
        self.by_id
            .read()
            .iter()
            .filter_map(|(id, (digest, grant))| {
                TokenScope::of(grant).map(|(scope, session)| (id.clone(), *digest, scope, session))
            })
            .collect()
    }

    /// Keeps the token log within a small multiple of the live tokens (blocking file I/O).
    fn compact_log(&self) {
        if let Some(log) = &self.log
            && let Err(e) = log.compact_if_due(|| self.recorded())
        {
            tracing::warn!(error = %e, "could not compact the token log");
        }
    }

    /// Accepts an existing token again (a restored session's hook token, which lives in its
    /// environment across server restarts). A malformed token is refused.
    pub fn register(&self, token: String, grant: Grant) -> Result<(), AuthError> {
        let id = token_id(&token).ok_or(AuthError::Invalid)?.to_string();
        let mut map = self.by_id.write();
        if map.len() >= MAX_TOKENS {
            return Err(AuthError::Full);
        }
        map.insert(id, (digest(&token), grant));
        Ok(())
    }

    /// Whether the token with this id is still valid (a connection checks it again once it is
    /// registered, so a revocation in between is not missed).
    pub fn holds(&self, id: &str) -> bool {
        self.by_id.read().contains_key(id)
    }

    /// The viewer and driver tokens now valid: (id, scope, session), by id.
    pub fn list(&self) -> Vec<(String, TokenScope, Uuid)> {
        let mut out: Vec<_> = self
            .by_id
            .read()
            .iter()
            .filter_map(|(id, (_, grant))| {
                TokenScope::of(grant).map(|(scope, session)| (id.clone(), scope, session))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Revokes the viewer or driver token `id` for good: recorded in the token log first
    /// (blocking file I/O: call it off the runtime's workers), then refused. False when no
    /// such token is valid (the admin token and hook tokens cannot be revoked this way).
    pub fn revoke(&self, id: &str) -> Result<bool, AuthError> {
        let recorded = matches!(
            self.by_id.read().get(id),
            Some((_, Grant::Read(_) | Grant::Write(_)))
        );
        if !recorded {
            return Ok(false);
        }
        if let Some(log) = &self.log {
            log.revoked_one(id)
                .map_err(|e| AuthError::Unrecorded(e.to_string()))?;
        }
        self.by_id.write().remove(id);
        self.compact_log();
        Ok(true)
    }

    /// Revokes every token granted on `session` (it was removed). When a recorded token was
    /// among them, the revocation is recorded too (blocking file I/O: call it off the
    /// runtime's workers); a failure to record it is logged (the tokens are revoked in memory
    /// either way, and only a grant on a session that no longer exists could come back).
    pub fn revoke_session(&self, session: Uuid) {
        let mut recorded = false;
        self.by_id.write().retain(|_, (_, g)| match g {
            Grant::Read(s) | Grant::Write(s) if *s == session => {
                recorded = true;
                false
            }
            Grant::Hook(s) => *s != session,
            _ => true,
        });
        if recorded && let Some(log) = &self.log {
            match log.revoked(session) {
                Ok(()) => self.compact_log(),
                Err(e) => {
                    tracing::warn!(%session, error = %e, "could not record the revocation of the session's tokens")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token_log::FILE;
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    /// An embedding host's admin token of its own shape works as given (`new` took it and
    /// `check` refused it); anything else of no shape is still invalid.
    #[test]
    fn an_admin_token_of_any_shape_is_checked_as_given() {
        let tokens = Tokens::new("host-admin-0123456789abcdef".into());
        assert!(
            tokens
                .check(Some("host-admin-0123456789abcdef"))
                .unwrap()
                .is_admin()
        );
        assert_eq!(tokens.check(Some("host-admin")), Err(AuthError::Invalid));
        assert_eq!(tokens.check(Some("")), Err(AuthError::Invalid));
    }

    #[test]
    fn grants_are_scoped() {
        let tokens = Tokens::new(new_secret("admin"));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let w = tokens.issue(Grant::Write(a)).unwrap();
        let r = tokens.issue(Grant::Read(a)).unwrap();
        let h = tokens.issue(Grant::Hook(a)).unwrap();
        let gw = tokens.check(Some(&w)).unwrap();
        assert!(gw.can_write(a) && !gw.can_write(b) && !gw.is_admin());
        let gr = tokens.check(Some(&r)).unwrap();
        assert!(gr.can_read(a) && !gr.can_write(a));
        let gh = tokens.check(Some(&h)).unwrap();
        assert!(gh.can_hook(a) && !gh.can_read(a) && !gh.can_hook(b));
        assert_eq!(tokens.check(None), Err(AuthError::Missing));
        assert_eq!(
            tokens.check(Some("corral_admin_nope")),
            Err(AuthError::Invalid)
        );
        let mut forged = w.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'a' { 'b' } else { 'a' });
        assert_eq!(tokens.check(Some(&forged)), Err(AuthError::Invalid));
        tokens.revoke_session(a);
        assert_eq!(tokens.check(Some(&w)), Err(AuthError::Invalid));
    }

    #[test]
    fn issued_tokens_come_back_revoked_ones_and_those_of_gone_sessions_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, gone) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let exists = |s: Uuid| s != gone;
        let admin = new_secret("admin");
        let tokens = Tokens::with_log(
            admin.clone(),
            TokenLog::open(dir.path(), MAX_TOKENS, exists).unwrap(),
        );
        let ra = tokens.issue(Grant::Read(a)).unwrap();
        let wb = tokens.issue(Grant::Write(b)).unwrap();
        let hook = tokens.issue(Grant::Hook(a)).unwrap();
        let rg = tokens.issue(Grant::Read(gone)).unwrap();
        let rb = tokens.issue(Grant::Read(b)).unwrap();
        tokens.revoke_session(b);
        assert!(tokens.check(Some(&wb)).is_err());
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        for t in [&ra, &wb, &hook, &rg, &rb] {
            assert!(!text.contains(t.as_str()), "no token in the clear");
        }
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A crash in the middle of an append: a torn last line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(b"{\"id\":\"abc\",\"sha").unwrap();
        drop(f);

        let again = Tokens::with_log(
            admin.clone(),
            TokenLog::open(dir.path(), MAX_TOKENS, exists).unwrap(),
        );
        assert_eq!(again.check(Some(&ra)), Ok(Grant::Read(a)), "survives");
        assert!(again.check(Some(&wb)).is_err(), "revoked");
        assert!(again.check(Some(&rb)).is_err(), "revoked with its session");
        assert!(
            again.check(Some(&hook)).is_err(),
            "hook tokens are not recorded"
        );
        assert!(again.check(Some(&rg)).is_err(), "its session is gone");
        assert_eq!(again.check(Some(&admin)), Ok(Grant::Admin));
        // Rewritten with what is left: one line.
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let mut forged = ra.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'a' { 'b' } else { 'a' });
        assert!(again.check(Some(&forged)).is_err());
    }

    #[test]
    fn the_token_log_stays_near_the_live_tokens_however_many_come_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let log = TokenLog::open(dir.path(), MAX_TOKENS, |_| true).unwrap();
        let tokens = Tokens::with_log(new_secret("admin"), log);
        let kept_session = Uuid::new_v4();
        let kept = tokens.issue(Grant::Read(kept_session)).unwrap();
        for _ in 0..3000 {
            let s = Uuid::new_v4();
            tokens.issue(Grant::Write(s)).unwrap();
            tokens.revoke_session(s);
        }
        let lines = std::fs::read_to_string(dir.path().join(FILE))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 4097, "{lines} lines for one live token");
        let again = Tokens::with_log(
            new_secret("admin"),
            TokenLog::open(dir.path(), MAX_TOKENS, |_| true).unwrap(),
        );
        assert_eq!(again.check(Some(&kept)), Ok(Grant::Read(kept_session)));
    }
}
