//! Login codes: what a login link carries instead of a token. `corral web` (and `corral serve`
//! on a terminal) asks for one and prints `/?code=…`; the page trades it for its cookie once.
//! A link with the token itself left the admin token in the browser's history (the page takes
//! it out of the address bar, not out of the history the browser already wrote), in shell
//! history and in screenshots, for as long as the token lives: a code is good for one login
//! within [`CODE_TTL`], and nothing after.
//!
//! Bounds: [`MAX_CODES`] outstanding (the oldest goes first); each kept as its SHA-256 only,
//! compared in constant time, as tokens are.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a code may wait for its login.
pub const CODE_TTL: Duration = Duration::from_secs(10 * 60);

/// Codes outstanding at most; a new one past it drops the oldest.
pub const MAX_CODES: usize = 64;

/// One code: its digest, when it lapses, and the token its login sets.
struct Code {
    digest: [u8; 32],
    until: Instant,
    token: String,
}

/// The outstanding codes (`App::login_codes`).
#[derive(Default)]
pub struct LoginCodes {
    codes: Mutex<VecDeque<Code>>,
}

impl std::fmt::Debug for LoginCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginCodes")
            .field("outstanding", &self.codes.lock().len())
            .finish()
    }
}

impl LoginCodes {
    /// A new code that logs in as `token` once, within [`CODE_TTL`].
    pub fn issue(&self, token: &str) -> String {
        let code = crate::auth::new_secret("login");
        let now = Instant::now();
        let mut codes = self.codes.lock();
        codes.retain(|c| c.until > now);
        while codes.len() >= MAX_CODES {
            codes.pop_front();
        }
        codes.push_back(Code {
            digest: crate::auth::digest(&code),
            until: now + CODE_TTL,
            token: token.to_string(),
        });
        code
    }

    /// The token `code` logs in as, if it is outstanding and not lapsed; it is spent either
    /// way (a code is never good twice).
    pub fn redeem(&self, code: &str) -> Option<String> {
        let digest = crate::auth::digest(code);
        let now = Instant::now();
        let mut codes = self.codes.lock();
        let at = codes
            .iter()
            .position(|c| crate::auth::ct_eq(&c.digest, &digest))?;
        let found = codes.remove(at)?;
        (found.until > now).then_some(found.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_logs_in_once_and_the_oldest_go_past_the_bound() {
        let codes = LoginCodes::default();
        let code = codes.issue("corral_admin_x");
        assert_eq!(codes.redeem(&code).as_deref(), Some("corral_admin_x"));
        assert_eq!(codes.redeem(&code), None, "a second time");
        assert_eq!(codes.redeem("corral_login_made_up"), None);
        let first = codes.issue("t0");
        for i in 1..=MAX_CODES {
            codes.issue(&format!("t{i}"));
        }
        assert_eq!(codes.redeem(&first), None, "dropped past the bound");
        assert_eq!(codes.codes.lock().len(), MAX_CODES);
    }

    #[test]
    fn a_lapsed_code_logs_in_as_nothing() {
        let codes = LoginCodes::default();
        let code = codes.issue("t");
        codes.codes.lock()[0].until = Instant::now() - Duration::from_secs(1);
        assert_eq!(codes.redeem(&code), None);
        assert!(codes.codes.lock().is_empty(), "spent");
    }
}
