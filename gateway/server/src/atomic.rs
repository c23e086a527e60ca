//! Atomic file replacement: a file's readers see its old content or its new one, never a torn
//! mix, and the new one survives a power loss once this returns. For the data dir's small
//! files (the admin token, `server.json`, the compacted token log).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers the temp files of this process: two replacements of the same file at once (two
/// requests) each write their own temp file, so neither truncates the other's.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` so that readers see the old or the new file, never a torn one:
/// temp file (mode `mode`, a name of its own: process id and a number) + fsync + rename + fsync
/// of the directory. Of two replacements at once, the one renamed last is the file.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // A failed write (a full disk) leaves no temp file behind.
        if let Err(gone) = std::fs::remove_file(&tmp)
            && gone.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %tmp.display(), error = %gone, "could not remove a temp file");
        }
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replacements of one file from many threads at once: each succeeds, and the file is
    /// whole — one of the contents written, never a mix (they used to share one temp file: a
    /// rename failed with ENOENT, and a longer write's tail stayed after a shorter one's).
    #[test]
    fn replacements_at_once_each_succeed_and_leave_a_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        let contents: Vec<Vec<u8>> = (0..8).map(|i| vec![b'a' + i as u8; 100 + i * 37]).collect();
        std::thread::scope(|s| {
            for c in &contents {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        write_atomic(path, c, 0o600).unwrap();
                    }
                });
            }
        });
        let file = std::fs::read(&path).unwrap();
        assert!(
            contents.contains(&file),
            "a torn file: {} bytes",
            file.len()
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "temp files left: {left:?}");
    }
}
