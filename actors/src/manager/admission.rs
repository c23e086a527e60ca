//! Admission of a session into the registry: its spec and name checked, then its name and id
//! reserved while it starts, so no other spawn takes them. A new session counts against
//! `max_sessions` (a refusal says how many of those kept have ended: `corral rm` makes room);
//! one restored at boot is admitted whatever the bound (its process may be running under its
//! holder).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use uuid::Uuid;

use super::Sessions;
use crate::error::SessionError;
use crate::handle::SessionHandle;
use crate::spec::{MAX_NAME, SessionSpec, SpecError};

/// Id and name indexes.
#[derive(Default)]
pub(super) struct Registry {
    /// By id.
    pub(super) by_id: HashMap<Uuid, SessionHandle>,
    /// Name → id.
    pub(super) by_name: HashMap<String, Uuid>,
    /// Names reserved by spawns in progress.
    pub(super) reserved: HashMap<String, Uuid>,
}

/// Whether a session is new (counted against `max_sessions`) or one that exists already (a
/// restore at boot: admitted whatever the bound, as its process may be running).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    New,
    Existing,
}

/// A name and id held by a session while it starts, so no other spawn takes them; given back
/// when dropped (a failed start, or a caller that stopped waiting) unless the session was
/// indexed under them.
pub(super) struct Reserved {
    registry: Arc<RwLock<Registry>>,
    pub(super) name: String,
    pub(super) id: Uuid,
    settled: bool,
}

impl Reserved {
    /// The session is indexed: the reservation ends inside the same write.
    pub(super) fn settle(mut self, reg: &mut Registry) {
        reg.reserved.remove(&self.name);
        self.settled = true;
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if !self.settled {
            self.registry.write().reserved.remove(&self.name);
        }
    }
}

impl Sessions {
    /// Holds `name` and `id` for a session about to start (or be restored), or says why not.
    pub(super) fn reserve(
        &self,
        id: Uuid,
        name: &str,
        admission: Admission,
    ) -> Result<Reserved, SessionError> {
        let mut reg = self.registry.write();
        // Every session kept counts, ended ones too: they hold their log files until removed,
        // and one started again (`restart`) is live at once, without coming through here.
        let max = self.config.max_sessions;
        if admission == Admission::New && reg.by_id.len() + reg.reserved.len() >= max {
            let ended = reg
                .by_id
                .values()
                .filter(|h| {
                    matches!(
                        h.shared().status.read().state,
                        crate::SessionState::Stopped | crate::SessionState::Failed
                    )
                })
                .count();
            return Err(SessionError::TooMany { max, ended });
        }
        if reg.by_name.contains_key(name) || reg.reserved.contains_key(name) {
            return Err(SessionError::NameTaken(name.to_string()));
        }
        // From 8 characters a key is also the start of an id (`Sessions::get`): a new name
        // that begins another session's id would name two sessions.
        if admission == Admission::New
            && name.len() >= super::ID_PREFIX_MIN
            && let Some(other) = reg
                .by_id
                .keys()
                .chain(reg.reserved.values())
                .find(|id| id.to_string().starts_with(&name.to_ascii_lowercase()))
        {
            return Err(SpecError::NameIsIdPrefix(name.to_string(), *other).into());
        }
        if reg.by_id.contains_key(&id) || reg.reserved.values().any(|r| *r == id) {
            return Err(SpecError::IdInUse(id).into());
        }
        reg.reserved.insert(name.to_string(), id);
        Ok(Reserved {
            registry: self.registry.clone(),
            name: name.to_string(),
            id,
            settled: false,
        })
    }
}

/// Validates a spec and returns the session's name.
pub(super) fn check_spec(id: Uuid, spec: &SessionSpec) -> Result<String, SessionError> {
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return Err(SpecError::EmptyArgv.into());
    }
    spec.size.check()?;
    let name = match &spec.name {
        Some(n) if n.trim().is_empty() => {
            return Err(SpecError::EmptyName.into());
        }
        Some(n) => n.clone(),
        None => default_name(&spec.argv[0], id),
    };
    spec.check()?;
    crate::agent::Profile::parse(spec.agent.as_deref())?;
    Ok(name)
}

/// A new session's name must fit a column, print as itself and never pass for an id: at most
/// [`MAX_NAME`] bytes, no control characters (a name is printed by `corral ps` to terminals),
/// not a UUID (a key that parses as one is looked up as an id), not `.` or `..` (a URL that
/// names it is normalised to another path). Names already recorded are restored as they are.
pub(super) fn check_new_name(name: &str) -> Result<(), SessionError> {
    if name.len() > MAX_NAME {
        return Err(SpecError::NameTooLong { len: name.len() }.into());
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(SpecError::NameControl(c).into());
    }
    if Uuid::parse_str(name).is_ok() {
        return Err(SpecError::NameIsId.into());
    }
    if name == "." || name == ".." {
        return Err(SpecError::NameDots(name.to_string()).into());
    }
    if name.trim() != name {
        return Err(SpecError::NameBlanks(name.to_string()).into());
    }
    Ok(())
}

/// What a new session's program is given must reach it as it was written: an environment
/// variable's name is not empty and holds no `=` (`A=B` with value `c` would arrive as `A`
/// with value `B=c`), no argument, variable or directory holds a NUL (C strings end
/// there), and none is longer than the kernel passes ([`crate::spec::MAX_ARG`]). Records
/// already kept are restored as they are.
pub(super) fn check_new_environment(spec: &SessionSpec) -> Result<(), SessionError> {
    for (i, (key, value)) in spec.env.iter().enumerate() {
        if key.is_empty() {
            return Err(SpecError::EnvEmptyName(i + 1).into());
        }
        if let Some((name, _)) = key.split_once('=') {
            return Err(SpecError::EnvNameEquals(name.to_string()).into());
        }
        if key.contains('\0') || value.contains('\0') {
            return Err(SpecError::EnvNul(key.clone()).into());
        }
        // `KEY=value` and its NUL: one string to the kernel.
        let len = key.len() + 1 + value.len();
        if len >= crate::spec::MAX_ARG {
            let what = format!("environment variable {key}");
            return Err(SpecError::ArgTooLong { what, len }.into());
        }
    }
    if let Some(i) = spec.argv.iter().position(|a| a.contains('\0')) {
        return Err(SpecError::ArgNul(i).into());
    }
    // Refused here (400), not by the exec (a 409 "could not start: Argument list too long").
    if let Some((i, a)) = spec
        .argv
        .iter()
        .enumerate()
        .find(|(_, a)| a.len() >= crate::spec::MAX_ARG)
    {
        let (what, len) = (format!("argument {i}"), a.len());
        return Err(SpecError::ArgTooLong { what, len }.into());
    }
    if let Some(cwd) = &spec.cwd
        && cwd.as_os_str().as_encoded_bytes().contains(&0)
    {
        return Err(SpecError::CwdNul.into());
    }
    Ok(())
}

/// `<program>-<first 8 hex of the id>`.
fn default_name(program: &str, id: Uuid) -> String {
    let base = std::path::Path::new(program)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "session".into());
    format!("{base}-{}", &id.simple().to_string()[..8])
}
