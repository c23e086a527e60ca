//! The environment a session's process starts with: a clean, documented base (so a server's own
//! secrets and quirks do not leak into agents) with the caller's variables on top, plus the
//! variables corral owns, and a private TMPDIR per session (Claude Code may fs.watch TMPDIR and
//! crash on sockets other programs leave there).

use std::path::{Path, PathBuf};

use uuid::Uuid;

/// Variables copied from corral's own environment when set. Everything else starts unset.
pub const BASE_VARS: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ",
];

/// The session id variable; every process of the session inherits it, which is also how the
/// sweep recognises a session's orphans that left its process session.
pub const SESSION_ID_VAR: &str = "CORRAL_SESSION_ID";

/// Builds the environment: base, then `TERM` and `NCURSES_NO_UTF8_ACS=1` (PTY mode), then the caller's variables, then
/// corral's own (`CORRAL_SESSION_ID`, `TMPDIR`), which the caller cannot override.
pub fn build(
    id: Uuid,
    pty: bool,
    tmpdir: &Path,
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = BASE_VARS
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    if env.iter().all(|(k, _)| k != "PATH") {
        env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    }
    if pty {
        env.push(("TERM".into(), "xterm-256color".into()));
        // ncurses draws boxes with Unicode line-drawing characters instead of switching to
        // the DEC graphics set (`ESC ( 0`), which the server's screen emulator (vt100) does not
        // emulate: a late viewer saw `lqqqk` letters around every ncurses window.
        env.push(("NCURSES_NO_UTF8_ACS".into(), "1".into()));
    }
    for (k, v) in extra {
        if k == SESSION_ID_VAR || k == "TMPDIR" {
            continue;
        }
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env.push((SESSION_ID_VAR.into(), id.to_string()));
    env.push(("TMPDIR".into(), tmpdir.display().to_string()));
    env
}

/// At most this many session TMPDIRs are made or removed at once, each on a blocking thread:
/// a shutdown of 1000 ended sessions started 515 threads (tokio's blocking pool grows to 512).
pub const TMP_WORK_AT_ONCE: usize = 8;

/// Makes or removes a TMPDIR (see [`TMP_WORK_AT_ONCE`]).
pub static TMP_WORK: crate::blocking::Bounded = crate::blocking::Bounded::new(TMP_WORK_AT_ONCE);

/// A private temporary directory for one session, removed when dropped.
#[derive(Debug)]
pub struct PrivateTmp {
    /// Its path.
    path: PathBuf,
    /// Removed when dropped (until [`keep`](Self::keep) or [`take`](Self::take)).
    armed: bool,
}

impl PrivateTmp {
    /// Creates `<root>/corral-<id>` with mode 0700 (or adopts it: a session a previous server
    /// left to its holder finds its files where they were). One that is there already must be
    /// this user's own directory, closed to others — not a link, not another user's (a root
    /// shared by all, `/tmp` by default for an embedding application, lets anyone make it
    /// first).
    pub fn create(root: &Path, id: Uuid) -> std::io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let path = Self::path_of(root, id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)?;
        let meta = std::fs::symlink_metadata(&path)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} is not this user's private directory (uid {}, mode {:o}): not used as a TMPDIR",
                    path.display(),
                    meta.uid(),
                    meta.mode() & 0o7777
                ),
            ));
        }
        Ok(Self { path, armed: true })
    }

    /// Where session `id`'s directory is under `root`.
    pub fn path_of(root: &Path, id: Uuid) -> PathBuf {
        root.join(format!("corral-{id}"))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the directory in place: its session's process lives on under its holder (a
    /// detach for `corral upgrade` or a shutdown that keeps sessions), and the next server
    /// adopts it with everything the program put there.
    pub fn keep(&mut self) {
        self.armed = false;
    }

    /// The path to remove now (by the caller, off the async runtime), if it is still this
    /// value's to remove; Drop then does nothing.
    pub fn take(&mut self) -> Option<PathBuf> {
        std::mem::take(&mut self.armed).then(|| self.path.clone())
    }

    /// Removes `path` and everything in it (a blocking call: a program may leave many files).
    pub fn remove(path: &Path) {
        if let Err(e) = std::fs::remove_dir_all(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove session TMPDIR");
        }
    }
}

impl Drop for PrivateTmp {
    fn drop(&mut self) {
        // The fallback after a kill or a panic of the session actor (`post_stop` did not run):
        // removing here blocks whatever thread drops it, which is rare and bounded by the
        // directory's contents.
        if let Some(path) = self.take() {
            Self::remove(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_overrides_base_but_not_corral_vars() {
        let id = Uuid::new_v4();
        let env = build(
            id,
            true,
            Path::new("/tmp/x"),
            &[
                ("PATH".into(), "/opt".into()),
                ("CORRAL_SESSION_ID".into(), "evil".into()),
                ("FOO".into(), "bar".into()),
            ],
        );
        let get = |k: &str| {
            env.iter()
                .filter(|(ek, _)| ek == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("PATH"), ["/opt"]);
        assert_eq!(get("FOO"), ["bar"]);
        assert_eq!(get("CORRAL_SESSION_ID"), [id.to_string().as_str()]);
        assert_eq!(get("TMPDIR"), ["/tmp/x"]);
        assert_eq!(get("TERM"), ["xterm-256color"]);
    }

    #[test]
    fn private_tmp_is_0700_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir();
        let t = PrivateTmp::create(&root, Uuid::new_v4()).unwrap();
        let p = t.path().to_path_buf();
        std::fs::write(p.join("f"), b"x").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(t);
        assert!(!p.exists());
    }

    /// A `corral-<id>` made first by someone else (open to others, or a link elsewhere) is not
    /// taken as the session's TMPDIR, and is left where it is.
    #[test]
    fn a_private_tmp_made_by_another_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let open = Uuid::new_v4();
        let path = PrivateTmp::path_of(root.path(), open);
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = PrivateTmp::create(root.path(), open).unwrap_err();
        assert!(
            e.to_string().contains("not this user's private directory"),
            "{e}"
        );
        assert!(path.exists(), "left where it was");
        let elsewhere = tempfile::tempdir().unwrap();
        let linked = Uuid::new_v4();
        std::os::unix::fs::symlink(elsewhere.path(), PrivateTmp::path_of(root.path(), linked))
            .unwrap();
        let e = PrivateTmp::create(root.path(), linked).unwrap_err();
        assert!(
            e.to_string().contains("not this user's private directory"),
            "{e}"
        );
        // Its own, adopted again (a session a previous server left), is taken.
        let own = Uuid::new_v4();
        let mut first = PrivateTmp::create(root.path(), own).unwrap();
        first.keep();
        assert!(PrivateTmp::create(root.path(), own).is_ok());
    }
}
