//! Spawning a session's main process as a session leader, with `posix_spawn`.
//!
//! Both spawn paths (PTY and pipes) come here, so the stop rules (`killpg(sid)`, DESIGN.md §5)
//! and the inheritance rules are the same in both modes. The child:
//!
//! - has every signal disposition reset to default and an empty signal mask
//!   (`POSIX_SPAWN_SETSIGDEF` over all signals, `POSIX_SPAWN_SETSIGMASK`): the server ignores
//!   `SIGPIPE`, an agent must not inherit that;
//! - calls `setsid()` (`POSIX_SPAWN_SETSID`): pid = pgid = sid, so the whole job tree can be
//!   signalled as one group;
//! - PTY mode: opens the slave by name *after* `setsid` and without `O_NOCTTY`, which makes it the
//!   controlling terminal of the new session (Linux acquires it on open for a session leader that
//!   has none), so the program gets `SIGWINCH` on resize and `SIGHUP` when the master closes;
//!   pipe mode: its three pipe ends become fds 0–2;
//! - changes to the session's cwd, then closes every fd ≥ 3 (`closefrom`), so nothing the server
//!   or an embedding host opened reaches the agent.
//!
//! Why not `std::process::Command` with a `pre_exec` hook (as before) or portable-pty's spawn: a
//! `pre_exec` hook forces a real `fork`, which copies the server's page tables and then pays
//! copy-on-write faults and an address-space teardown at `exec`; portable-pty's child also lists
//! `/proc/self/fd` and closes fds one by one (allocating after `fork`). glibc's `posix_spawn` runs
//! the steps above in a `CLONE_VM | CLONE_VFORK` child, so a spawn costs the same whatever the
//! server's size. Measured with `cargo bench -p corral-actors --bench sessions -- stop`: 200
//! concurrent spawns 0.53 s (portable-pty) → 0.31 s (`pre_exec` + `close_range`) → see
//! docs/performance.md for this version. Requires glibc ≥ 2.34 (`closefrom` file action).
//!
//! `PATH` lookup uses the *session's* `PATH` (the environment the program gets, not the
//! server's), relative to the session's cwd, like a shell started there would.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::process::reaper;

/// How the child's fds 0–2 are set up.
pub enum ChildIo<'a> {
    /// The PTY slave at this path (opened in the child, becoming its controlling terminal).
    Pty(&'a Path),
    /// These fds (pipe ends, say) become stdin, stdout and stderr.
    Fds([RawFd; 3]),
}

/// Spawns `argv` with exactly `env` in `cwd` (or the server's cwd) as a new session leader (see
/// the module docs), owned in the [`reaper`] from the start. Returns its pid.
pub fn spawn_leader(
    argv: &[String],
    env: &[(String, String)],
    cwd: Option<&Path>,
    io: ChildIo<'_>,
) -> io::Result<i32> {
    let Some(program) = argv.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty argv"));
    };
    // A missing working directory (or one that is a file) would fail inside posix_spawn as
    // "No such file" or "Not a directory", which names the program; say which path is wrong.
    if let Some(dir) = cwd {
        let e = match std::fs::metadata(dir) {
            Err(e) => Some(e),
            Ok(m) if !m.is_dir() => Some(io::Error::from_raw_os_error(libc::ENOTDIR)),
            Ok(_) => None,
        };
        if let Some(e) = e {
            return Err(io::Error::new(
                e.kind(),
                format!("working directory {}: {e}", dir.display()),
            ));
        }
    }
    let path_var = env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v);
    let exe = resolve(program, path_var.map(String::as_str), cwd)?;
    let exe = cstring(exe.as_os_str().as_bytes())?;
    let argv_c = argv
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let env_c = env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let mut argv_p: Vec<*mut libc::c_char> = argv_c.iter().map(|c| c.as_ptr() as _).collect();
    argv_p.push(std::ptr::null_mut());
    let mut env_p: Vec<*mut libc::c_char> = env_c.iter().map(|c| c.as_ptr() as _).collect();
    env_p.push(std::ptr::null_mut());

    let mut actions = FileActions::new()?;
    let tty_c;
    match io {
        ChildIo::Pty(tty) => {
            tty_c = cstring(tty.as_os_str().as_bytes())?;
            actions.open(0, &tty_c, libc::O_RDWR)?;
            actions.dup2(0, 1)?;
            actions.dup2(0, 2)?;
        }
        ChildIo::Fds(fds) => {
            for (target, fd) in fds.into_iter().enumerate() {
                actions.dup2(fd, target as RawFd)?;
            }
        }
    }
    let cwd_c;
    if let Some(dir) = cwd {
        cwd_c = cstring(dir.as_os_str().as_bytes())?;
        actions.chdir(&cwd_c)?;
    }
    actions.closefrom(3)?;
    let attr = Attributes::new()?;

    let _spawning = reaper::spawn_guard();
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: the CStrings and pointer arrays live until the
    // end of this function, both arrays are null-terminated, and `actions`/`attr` are initialised.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            exe.as_ptr(),
            &actions.0,
            &attr.0,
            argv_p.as_ptr(),
            env_p.as_ptr(),
        )
    };
    if rc != 0 {
        let e = io::Error::from_raw_os_error(rc);
        return Err(io::Error::new(e.kind(), format!("spawn {program}: {e}")));
    }
    reaper::own(pid);
    Ok(pid)
}

/// Finds the file to execute: a name with a `/` as given (relative to `cwd`), else the first
/// executable regular file named `program` in `path` (entries relative to `cwd`).
fn resolve(program: &str, path: Option<&str>, cwd: Option<&Path>) -> io::Result<PathBuf> {
    let base = match cwd {
        Some(dir) => dir.to_path_buf(),
        None => std::env::current_dir()?,
    };
    if program.contains('/') {
        let exe = base.join(program);
        return match check_executable(&exe) {
            Ok(()) => Ok(exe),
            Err(e) => Err(io::Error::new(e.kind(), format!("spawn {program}: {e}"))),
        };
    }
    let path = path.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    let mut last_err = None;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let exe = base.join(dir).join(program);
        match check_executable(&exe) {
            Ok(()) => return Ok(exe),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => last_err = Some((exe, e)),
        }
    }
    Err(match last_err {
        Some((exe, e)) => {
            io::Error::new(e.kind(), format!("spawn {program}: {}: {e}", exe.display()))
        }
        None => io::Error::new(
            io::ErrorKind::NotFound,
            format!("spawn {program}: not found in the session's PATH ({path})"),
        ),
    })
}

/// `Ok` if `path` is a regular file we may execute.
fn check_executable(path: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "not a regular file",
        ));
    }
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).map_err(io::Error::from)
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "argument contains a NUL byte: {:?}",
                OsStr::from_bytes(bytes).to_string_lossy()
            ),
        )
    })
}

/// Fails with the error code a `posix_spawn*` call returned.
fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::from_raw_os_error(rc);
    Err(io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// `posix_spawn_file_actions_t`, destroyed on drop.
struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<FileActions> {
        // SAFETY: a zeroed struct is valid storage for `_init` to initialise.
        let mut raw: libc::posix_spawn_file_actions_t = unsafe { std::mem::zeroed() };
        // SAFETY: `raw` is valid, writable storage.
        check(
            unsafe { libc::posix_spawn_file_actions_init(&mut raw) },
            "posix_spawn_file_actions_init",
        )?;
        Ok(FileActions(raw))
    }

    fn open(&mut self, fd: RawFd, path: &CString, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: initialised actions; glibc copies the path.
        check(
            unsafe {
                libc::posix_spawn_file_actions_addopen(&mut self.0, fd, path.as_ptr(), flags, 0)
            },
            "posix_spawn_file_actions_addopen",
        )
    }

    fn dup2(&mut self, fd: RawFd, target: RawFd) -> io::Result<()> {
        // SAFETY: initialised actions.
        check(
            unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, fd, target) },
            "posix_spawn_file_actions_adddup2",
        )
    }

    fn chdir(&mut self, dir: &CString) -> io::Result<()> {
        // SAFETY: initialised actions; glibc copies the path.
        check(
            unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut self.0, dir.as_ptr()) },
            "posix_spawn_file_actions_addchdir_np",
        )
    }

    fn closefrom(&mut self, from: RawFd) -> io::Result<()> {
        // SAFETY: initialised actions.
        check(
            unsafe { libc::posix_spawn_file_actions_addclosefrom_np(&mut self.0, from) },
            "posix_spawn_file_actions_addclosefrom_np",
        )
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// `posix_spawnattr_t` with the session-leader flags, destroyed on drop.
struct Attributes(libc::posix_spawnattr_t);

impl Attributes {
    fn new() -> io::Result<Attributes> {
        // SAFETY: a zeroed struct is valid storage for `_init` to initialise.
        let mut raw: libc::posix_spawnattr_t = unsafe { std::mem::zeroed() };
        // SAFETY: `raw` is valid, writable storage.
        check(
            unsafe { libc::posix_spawnattr_init(&mut raw) },
            "posix_spawnattr_init",
        )?;
        let mut attr = Attributes(raw);
        // SAFETY: sigset operations on local, initialised sets; attr is initialised.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            check(
                libc::posix_spawnattr_setsigdefault(&mut attr.0, &all),
                "posix_spawnattr_setsigdefault",
            )?;
            check(
                libc::posix_spawnattr_setsigmask(&mut attr.0, &none),
                "posix_spawnattr_setsigmask",
            )?;
            // The constants' integer types differ across libc versions; all fit a c_short.
            let flags = libc::POSIX_SPAWN_SETSID as libc::c_int
                | libc::POSIX_SPAWN_SETSIGDEF as libc::c_int
                | libc::POSIX_SPAWN_SETSIGMASK as libc::c_int;
            check(
                libc::posix_spawnattr_setflags(&mut attr.0, flags as libc::c_short),
                "posix_spawnattr_setflags",
            )?;
        }
        Ok(attr)
    }
}

impl Drop for Attributes {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}
