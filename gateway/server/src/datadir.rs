//! The data dir: where a server keeps its token, its `server.json` (so local CLI commands need
//! no flags) and, later, its state. One server per data dir, enforced with an flock (never a PID
//! file: PIDs get reused, and a stale lock after SIGKILL is released by the kernel).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;

/// What a running server publishes for local clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Base URL, e.g. `http://127.0.0.1:7070`.
    pub url: String,
    /// Server pid (informational; the lock is the truth).
    pub pid: u32,
    /// corral version.
    pub version: String,
}

/// Shortest admin token taken from a data dir's `token` file (those corral makes are far longer).
pub const MIN_TOKEN: usize = 16;

/// Why the data dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another server holds the lock.
    #[error("another corral server is running on {dir} (pid {pid}); stop it or use --data-dir")]
    Locked {
        /// The data dir.
        dir: PathBuf,
        /// Its pid as published, or "unknown".
        pid: String,
    },
    /// Someone else could change what is in it (the socket, the registry, the token).
    #[error(
        "{dir} is {why}: a data dir holds the admin token and every session's output; use a folder of your own (mode 0700), or let corral create one"
    )]
    Unsafe {
        /// The data dir.
        dir: PathBuf,
        /// What is wrong, in words.
        why: String,
    },
    /// The admin token in the data dir is too short to be a secret.
    #[error("{0}")]
    Weak(String),
    /// An I/O error, with the path.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The data dir must be ours and writable by us alone: a folder another user owns, or one
/// they may write in (`/tmp`, a group-writable share), could have the socket, the registry or
/// the token swapped under the server. One others may only read is used, with a warning (what
/// corral writes in it is owner-only).
fn owned_by_us(root: &Path) -> Result<(), DataDirError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(root).map_err(io_err(root))?;
    let unsafe_dir = |why: String| DataDirError::Unsafe {
        dir: root.to_path_buf(),
        why,
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "owned by uid {}, not by you (uid {me})",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(format!("writable by others (mode {mode:o})")));
    }
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %root.display(), mode = format!("{mode:o}"), "the data dir is readable by others; what corral writes in it is owner-only, but 0700 is safer");
    }
    Ok(())
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The data dir to use: the flag, else `$CORRAL_DATA_DIR`, else `$XDG_STATE_HOME/corral`, else
/// `~/.local/state/corral` — made absolute against the current directory: sessions are handed
/// it (`CORRAL_DATA_DIR`, their `TMPDIR` under it) and run in directories of their own.
pub fn resolve(flag: Option<PathBuf>) -> PathBuf {
    let dir = flag
        .or_else(|| {
            std::env::var_os("CORRAL_DATA_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| {
            std::env::var_os("XDG_STATE_HOME")
                .filter(|v| !v.is_empty())
                .map(|p| PathBuf::from(p).join("corral"))
        })
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/tmp".into())
                .join(".local/state/corral")
        });
    // A current directory that is gone leaves the path as it is (every use of it then fails
    // with the path in the message).
    std::path::absolute(&dir).unwrap_or(dir)
}

/// An opened data dir, exclusively locked for as long as this value lives.
#[derive(Debug)]
pub struct DataDir {
    /// Its path.
    root: PathBuf,
    /// The flock on `lock` (what servers before 2026-12-05 take: an upgrade from one waits
    /// for it) and the flock on the directory itself (deleting `lock` does not let a second
    /// server in: it took over every session and the first one killed them); released by the
    /// kernel when the process dies.
    _locks: (Flock<File>, Flock<File>),
}

impl DataDir {
    /// Creates (0700) and locks the data dir, or says which server holds it.
    pub fn open_exclusive(root: &Path) -> Result<DataDir, DataDirError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(io_err(root))?;
        owned_by_us(root)?;
        let lock_path = root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let dir = File::open(root).map_err(io_err(root))?;
        let locked =
            |file: File, path: &Path| match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => Ok(lock),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(DataDirError::Locked {
                    dir: root.to_path_buf(),
                    pid: read_server_json(root)
                        .map(|s| s.pid.to_string())
                        .unwrap_or_else(|_| "unknown".into()),
                }),
                Err((_, e)) => Err(DataDirError::Io {
                    path: path.to_path_buf(),
                    source: e.into(),
                }),
            };
        let file_lock = locked(file, &lock_path)?;
        let dir_lock = locked(dir, root)?;
        Ok(DataDir {
            root: root.to_path_buf(),
            _locks: (file_lock, dir_lock),
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The admin token: read from `token` (at least [`MIN_TOKEN`] characters; made owner-only
    /// if it was not), or created (0600, atomically) at first start.
    pub fn admin_token(&self) -> Result<String, DataDirError> {
        let path = self.root.join("token");
        match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => {
                let token = t.trim().to_string();
                // One anyone could guess is no token (a file restored by hand, `echo a >`).
                if token.len() < MIN_TOKEN {
                    return Err(DataDirError::Weak(format!(
                        "{}: the admin token has {} character(s), at least {MIN_TOKEN} are needed (remove the file and a new one is made)",
                        path.display(),
                        token.len()
                    )));
                }
                // Owner-only, also when it came back from a copy made with the umask.
                use std::os::unix::fs::PermissionsExt;
                if std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
                    tracing::warn!(path = %path.display(), "the admin token was readable by others: made 0600 (rotate it if others could read it)");
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                        .map_err(io_err(&path))?;
                }
                Ok(token)
            }
            Ok(_) | Err(_) => {
                let token = crate::auth::new_secret("admin");
                write_atomic(&path, format!("{token}\n").as_bytes(), 0o600)
                    .map_err(io_err(&path))?;
                Ok(token)
            }
        }
    }

    /// Publishes `server.json` atomically. Written on tokio's blocking pool (it waits for an
    /// fsync): the sessions taken back before it are already being served by the workers.
    pub async fn publish(&self, info: &ServerInfo) -> Result<(), DataDirError> {
        let path = self.root.join("server.json");
        let json = serde_json::to_vec_pretty(info).map_err(|e| DataDirError::Io {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        let at = path.clone();
        blocking_io(move || write_atomic(&at, &json, 0o600))
            .await
            .map_err(io_err(&path))
    }

    /// Removes `server.json` (clean shutdown), on the blocking pool as [`DataDir::publish`].
    pub async fn unpublish(&self) {
        let path = self.root.join("server.json");
        let at = path.clone();
        if let Err(e) = blocking_io(move || std::fs::remove_file(&at)).await
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove server.json");
        }
    }
}

/// File I/O `work` on tokio's blocking pool, for a server already serving; its panic is an
/// I/O error like any other.
pub(crate) async fn blocking_io<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|panicked| Err(io::Error::other(panicked)))
}

/// Reads the `server.json` of a data dir.
pub fn read_server_json(root: &Path) -> io::Result<ServerInfo> {
    let text = std::fs::read_to_string(root.join("server.json"))?;
    serde_json::from_str(&text).map_err(io::Error::other)
}

/// Reads the admin token of a data dir (for local clients).
#[allow(dead_code)] // used by the client commands of the CLI issue
pub fn read_token(root: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(root.join("token"))?
        .trim()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_relative_data_dir_is_made_absolute() {
        // Sessions get it in their environment and run elsewhere: `rdata` meant nothing there.
        let dir = resolve(Some("rdata".into()));
        assert!(dir.is_absolute(), "{}", dir.display());
        assert_eq!(dir, std::env::current_dir().unwrap().join("rdata"));
        assert_eq!(resolve(Some("/x/y".into())), PathBuf::from("/x/y"));
    }

    /// A token file others may read (a copy made with the umask) is made owner-only; one too
    /// short to be a secret is refused, saying how to get a new one.
    #[test]
    fn a_loose_token_is_tightened_and_a_short_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open_exclusive(dir.path()).unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "admin_0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(d.admin_token().unwrap(), "admin_0123456789abcdef");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "a\n").unwrap();
        let e = d.admin_token().unwrap_err().to_string();
        assert!(e.contains("at least 16"), "{e}");
    }

    #[tokio::test]
    async fn token_is_0600_stable_and_second_instance_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open_exclusive(dir.path()).unwrap();
        let t1 = d.admin_token().unwrap();
        assert_eq!(t1, d.admin_token().unwrap());
        let mode = std::fs::metadata(dir.path().join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        d.publish(&ServerInfo {
            url: "http://127.0.0.1:1".into(),
            pid: 4242,
            version: "x".into(),
        })
        .await
        .unwrap();
        match DataDir::open_exclusive(dir.path()) {
            Err(e @ DataDirError::Locked { .. }) => assert!(e.to_string().contains("pid 4242")),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(d);
        DataDir::open_exclusive(dir.path()).unwrap();
    }

    #[test]
    fn a_data_dir_others_may_write_in_is_refused_and_one_they_may_read_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let set = |mode| {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap()
        };
        for mode in [0o777, 0o1777, 0o770, 0o702] {
            set(mode);
            match DataDir::open_exclusive(dir.path()) {
                Err(e @ DataDirError::Unsafe { .. }) => {
                    assert!(e.to_string().contains("writable by others"), "{e}")
                }
                other => panic!("mode {mode:o}: expected Unsafe, got {other:?}"),
            }
        }
        set(0o755);
        let d = DataDir::open_exclusive(dir.path()).unwrap();
        drop(d);
        // A folder corral creates is 0700.
        let fresh = dir.path().join("new");
        drop(DataDir::open_exclusive(&fresh).unwrap());
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
