//! Tokens and what they allow. A token is `corral_<id>_<secret>`: the id finds the grant in a
//! map, the secret is compared in constant time, so lookups never leak the secret through
//! timing. Tokens are never logged; only their ids are.

use std::collections::HashMap;

use parking_lot::RwLock;
use uuid::Uuid;

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

/// Splits a token into (id, whole token).
fn token_id(token: &str) -> Option<&str> {
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
}

/// Every valid token.
#[derive(Debug)]
pub struct Tokens {
    /// id → (whole token, grant).
    by_id: RwLock<HashMap<String, (String, Grant)>>,
}

impl Tokens {
    /// A store whose admin token is `admin`.
    pub fn new(admin: String) -> Self {
        let mut by_id = HashMap::new();
        let id = token_id(&admin).unwrap_or("admin").to_string();
        by_id.insert(id, (admin, Grant::Admin));
        Self {
            by_id: RwLock::new(by_id),
        }
    }

    /// Checks a presented token.
    pub fn check(&self, presented: Option<&str>) -> Result<Grant, AuthError> {
        let token = presented.ok_or(AuthError::Missing)?;
        let id = token_id(token).ok_or(AuthError::Invalid)?;
        let map = self.by_id.read();
        match map.get(id) {
            Some((real, grant)) if ct_eq(real.as_bytes(), token.as_bytes()) => Ok(grant.clone()),
            _ => Err(AuthError::Invalid),
        }
    }

    /// Issues a new token with `grant`.
    pub fn issue(&self, grant: Grant) -> Result<String, AuthError> {
        let mut map = self.by_id.write();
        if map.len() >= MAX_TOKENS {
            return Err(AuthError::Full);
        }
        let id = Uuid::new_v4().simple().to_string()[..12].to_string();
        let token = new_secret(&id);
        map.insert(id, (token.clone(), grant));
        Ok(token)
    }

    /// Accepts an existing token again (a restored session's hook token, which lives in its
    /// environment across server restarts). A malformed token is refused.
    pub fn register(&self, token: String, grant: Grant) -> Result<(), AuthError> {
        let id = token_id(&token).ok_or(AuthError::Invalid)?.to_string();
        let mut map = self.by_id.write();
        if map.len() >= MAX_TOKENS {
            return Err(AuthError::Full);
        }
        map.insert(id, (token, grant));
        Ok(())
    }

    /// Revokes every token granted on `session` (it was removed).
    pub fn revoke_session(&self, session: Uuid) {
        self.by_id.write().retain(|_, (_, g)| match g {
            Grant::Read(s) | Grant::Write(s) | Grant::Hook(s) => *s != session,
            Grant::Admin => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
