//! Spool: the holder's copy of the output the server has not yet put in its log.
//!
//! The holder reads the terminal; a byte read from a PTY is gone from the kernel, so before it
//! is passed on it is written here (`pwrite(2)` to the page cache: a completed write survives any
//! process's death). The server acknowledges what its own log holds (`Ack`); acknowledged bytes
//! are punched out of the file (`FALLOC_FL_PUNCH_HOLE`), so the disk holds only the window the
//! server may still need. A file position is an output offset minus `base`, the offset this
//! incarnation of the process started at, so a new server asks for "everything from my log's
//! end" and gets exactly that: no gap, no duplicate.
//!
//! The last [`KEEP_ACKED`] acknowledged bytes stay (a log whose torn tail recovery cut off is
//! refilled from them). Bounded: [`MAX_UNACKED`] bytes beyond the acknowledged offset, then the
//! holder stops reading the terminal and the program blocks on its full PTY, as under tmux.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Most output the spool holds beyond what the server acknowledged (the holder stops reading
/// the terminal there). 64 MiB: minutes of a chatty agent with no server attached.
pub const MAX_UNACKED: u64 = 64 << 20;

/// Acknowledged output kept anyway, so a server whose log lost its last records (a torn tail
/// cut at recovery) gets them again instead of a gap: more than the largest log record.
pub const KEEP_ACKED: u64 = 1 << 20;

/// Holes are punched in whole pages.
const PAGE: u64 = 4096;

/// The spool file of one process incarnation.
#[derive(Debug)]
pub struct Spool {
    file: File,
    /// Output offset of file position 0.
    base: u64,
    /// Output offset after the last byte written.
    end: u64,
    /// Output offset the server's log holds up to.
    acked: u64,
    /// File position below which the file is a hole.
    punched: u64,
}

impl Spool {
    /// Creates (truncating) the spool at `path`, owner-only, starting at output offset `base`.
    pub fn create(path: &Path, base: u64) -> io::Result<Spool> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        Ok(Spool {
            file,
            base,
            end: base,
            acked: base,
            punched: 0,
        })
    }

    /// Output offset of this incarnation's first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Output offset after the last byte written.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The lowest output offset still held (a server may ask for anything from here on).
    pub fn held_from(&self) -> u64 {
        self.base + self.punched
    }

    /// Bytes held beyond the acknowledged offset.
    pub fn unacked(&self) -> u64 {
        self.end - self.acked
    }

    /// Whether the terminal may be read (the bound is not reached).
    pub fn has_room(&self) -> bool {
        self.unacked() < MAX_UNACKED
    }

    /// Appends `bytes` (all of them, or an error and nothing counted).
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, self.end - self.base)?;
        self.end += bytes.len() as u64;
        Ok(())
    }

    /// Reads output from offset `at` (≥ the acknowledged offset, < end) into `buf`.
    pub fn read_at(&self, at: u64, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.end - at) as usize);
        self.file.read_at(&mut buf[..want], at - self.base)
    }

    /// The server's log holds the output up to `upto`: forget it (clamped to what was written).
    pub fn ack(&mut self, upto: u64) -> io::Result<()> {
        let upto = upto.clamp(self.acked, self.end);
        self.acked = upto;
        let hole_end = (upto.saturating_sub(KEEP_ACKED).max(self.base) - self.base) / PAGE * PAGE;
        if hole_end > self.punched {
            // SAFETY: fallocate on our own open file; the range is inside what was written.
            let rc = unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    self.punched as libc::off_t,
                    (hole_end - self.punched) as libc::off_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            self.punched = hole_end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn offsets_survive_acks_and_acked_pages_leave_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.spool");
        let mut s = Spool::create(&path, 1000).unwrap();
        let len = KEEP_ACKED as usize + 40_000;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        s.append(&data).unwrap();
        assert_eq!(s.end(), 1000 + len as u64);
        let before = std::fs::metadata(&path).unwrap().blocks();
        // Acknowledged: all but the last 8 KiB; the last KEEP_ACKED of that stay held.
        let acked = s.end() - 8192;
        s.ack(acked).unwrap();
        let after = std::fs::metadata(&path).unwrap().blocks();
        assert!(after < before, "punched pages freed: {before} → {after}");
        let from = s.held_from();
        assert!(
            from <= acked - KEEP_ACKED && from > acked - KEEP_ACKED - 4096,
            "{from}"
        );
        let mut buf = vec![0u8; 10_000];
        let n = s.read_at(from, &mut buf).unwrap();
        let at = (from - 1000) as usize;
        assert_eq!(&buf[..n], &data[at..at + n]);
        // Acks never go back, nor past the end.
        s.ack(5).unwrap();
        assert_eq!(s.unacked(), 8192);
        s.ack(u64::MAX).unwrap();
        assert_eq!(s.unacked(), 0);
    }
}
