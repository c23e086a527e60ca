//! Atomic file replacement: a file's readers see its old content or its new one, never a torn
//! mix, and the new one survives a power loss once this returns. For the data dir's small
//! files (the admin token, `server.json`, the compacted token log).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `bytes` to `path` so that readers see the old or the new file, never a torn one:
/// temp file (mode `mode`) + fsync + rename + fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
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
