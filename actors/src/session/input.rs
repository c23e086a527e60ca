//! Input: the writer of a running process's input. A process that never reads blocks only this
//! task, never the session or the runtime, and a full queue is an explicit error to the sender
//! (see `SessionHandle::input`); bytes that cannot be delivered are counted, never dropped
//! silently.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use corral_runtime::{BoundedSender, Permit};
use tokio::io::unix::AsyncFd;

use crate::fd;

/// How long after a paste its Enter is written at the soonest: an agent's TUI loses an Enter
/// that arrives in the same read as the paste (Claude Code's own PTY driver waits 10 ms between
/// the two).
pub const PASTE_ENTER_DELAY: std::time::Duration = std::time::Duration::from_millis(100);
/// How long the Enter waits at the most for the program to answer the paste with output (see
/// [`InputWriter::start`]).
pub const PASTE_ENTER_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// The most bytes a write may have to be a keystroke (a key, or an escape sequence for one)
/// whose echo the writer looks for.
const KEYSTROKE: usize = 16;
/// How long the writer of a terminal looks for a keystroke's echo before it goes back to its
/// queue (`crate::fd::bytes_soon`): the echo comes back through the kernel worker and the
/// program within tens of microseconds, and a runtime worker that waited for it asleep was
/// woken from a halted vCPU. Keystroke echo through the ttyd endpoint, `corral bench ttyd`
/// (blocking client), five alternated runs each: p50 93 → 69 µs, against ttyd's (median) 0.78×
/// and p99 0.86× instead of 1.10× and 1.02× (docs/performance.md, session 32).
pub const ECHO_LOOK: std::time::Duration = std::time::Duration::from_micros(100);

/// Bytes to write, and optionally more bytes to write a moment later (a paste's Enter); the
/// permit holds their share of the byte bound until written. One queue item, so nothing else
/// the session is sent can come between the two.
pub struct Write {
    /// What to write now.
    pub bytes: Vec<u8>,
    /// What to write after a pause.
    pub then: Option<(std::time::Duration, Vec<u8>)>,
    /// Its share of the queue's bound.
    pub permit: Permit,
    /// Told once all of it was written (a caller that answers "entered", not "queued").
    pub done: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The sending half of a process's input: its byte-bounded queue, and the terminal (or pipe)
/// itself, for input that nothing queued precedes.
#[derive(Clone)]
pub struct InputQueue {
    /// The writer task's queue.
    tx: BoundedSender<Write>,
    /// The process's input, shared with the writer task.
    fd: Arc<AsyncFd<OwnedFd>>,
    /// A terminal, whose answer to a keystroke is looked for (see [`ECHO_LOOK`]).
    echoes: bool,
}

impl InputQueue {
    /// Bytes queued or being written now.
    pub fn depth(&self) -> usize {
        self.tx.depth()
    }

    /// The queue's bound in bytes.
    pub fn capacity(&self) -> usize {
        self.tx.capacity()
    }

    /// Input for the process: `bytes`, and `then` after a pause (a paste's Enter); `done` told
    /// once all of it was written. `SendError::Full` at once when it does not fit the queue's
    /// bound; `Closed` when the writer is gone.
    ///
    /// Written at once by the caller, with no task in between, when it is plain bytes and
    /// nothing is queued or being written before it (its own permit is the queue's whole
    /// depth, so the order of everything queued holds): a keystroke reaches the program
    /// without waking the writer task — one task switch, and the rest of the caller's poll,
    /// fewer before the write (docs/performance.md, session 34). What the terminal does not
    /// take at once (a full input buffer), and any write error, go through the queue: the
    /// writer waits for room, and counts and reports what cannot be delivered.
    pub fn send(
        &self,
        mut bytes: Vec<u8>,
        then: Option<(std::time::Duration, Vec<u8>)>,
        done: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<(), corral_runtime::SendError> {
        let len = bytes.len() + then.as_ref().map_or(0, |(_, b)| b.len());
        let permit = self.tx.reserve(len)?;
        if then.is_none() && done.is_none() && self.tx.depth() == permit.weight() {
            match fd::write(self.fd.get_ref(), &bytes) {
                Ok(n) if n == bytes.len() => {
                    if self.echoes && n <= KEYSTROKE {
                        look_for_echo(&self.fd);
                    }
                    return Ok(());
                }
                Ok(n) => {
                    bytes.drain(..n);
                }
                Err(e) => {
                    tracing::trace!(error = %e, "input not taken at once; queued");
                }
            }
        }
        self.tx.send(permit, |permit| Write {
            bytes,
            then,
            permit,
            done,
        })
    }
}

/// After a keystroke, looks for the terminal's answer for up to [`ECHO_LOOK`]: whether it came
/// or not, the output reader reads it (woken by the reactor, on a CPU that did not halt
/// meanwhile).
fn look_for_echo(fd: &AsyncFd<OwnedFd>) {
    fd::bytes_soon(
        fd.get_ref().as_raw_fd(),
        ECHO_LOOK,
        std::time::Duration::ZERO,
    );
}

/// The input writer of one process: a task that drains the session's byte-bounded input queue
/// into the fd. A task rather than an actor: it has no messages but its queue, and every session
/// has one (an actor's mailboxes cost ~4.7 KB more, a quarter of an idle session's budget). It is
/// owned by the session through this handle: dropping it aborts the task, and the task also ends
/// when the queue's last sender is gone. What is still queued when it is aborted (the process
/// went away, or did not take its input in time) is counted as lost and logged.
pub struct InputWriter {
    task: tokio::task::JoinHandle<()>,
    /// The queue's depth in bytes.
    queue: Arc<corral_runtime::MailboxGauge>,
    /// The session's count of input bytes lost.
    lost: Arc<AtomicU64>,
}

impl InputWriter {
    /// Starts the writer for `fd` with a queue of `capacity` bytes; returns the queue's sender.
    ///
    /// The second part of a write (a paste's Enter) waits its pause, then until the program
    /// answered the first with output (the session's `output` Ring grew: it read the paste and
    /// redrew) and that output paused ([`PASTE_QUIET`]), up to [`PASTE_ENTER_MAX`] in all: a
    /// TUI busy for longer than the pause (a loaded machine) would otherwise get both in one
    /// read, or the Enter in the middle of the paste, and lose it. The next paste waits the same
    /// way for the program's answer to that Enter (up to [`PASTE_ENTER_MAX`] after it).
    ///
    /// `echoes`: `fd` is a terminal, which echoes what is typed (or answers a key with output):
    /// after a keystroke, with nothing else queued, the writer looks for that answer for up to
    /// [`ECHO_LOOK`] before it waits on its queue again. That holds this runtime worker for
    /// at most that long per keystroke (the CPU is yielded to other threads meanwhile); a
    /// paste, a larger write or a pipe never looks.
    pub fn start(
        fd: AsyncFd<OwnedFd>,
        lost: Arc<AtomicU64>,
        capacity: usize,
        output: corral_runtime::Ring,
        echoes: bool,
    ) -> (InputQueue, InputWriter) {
        let (tx, mut rx) = BoundedSender::<Write>::channel(capacity);
        let (queue, counted) = (tx.gauge(), lost.clone());
        let fd = Arc::new(fd);
        let sender = InputQueue {
            tx,
            fd: fd.clone(),
            echoes,
        };
        let task = tokio::spawn(async move {
            // The last paste's Enter: a reader of the output from just before it was written,
            // and until when the next paste waits for the program's answer to it.
            let mut entered: Option<(corral_runtime::RingReader, tokio::time::Instant)> = None;
            while let Some(write) = rx.recv().await {
                // A paste right after another one's Enter waits for the program to take that
                // Enter, as the Enter waited for its paste: Claude Code's TUI that gets the
                // next paste before it has cleared its input box adds it to the prompt just
                // sent, and the next prompt went as both ("AAA oneBBB two").
                if write.then.is_some()
                    && let Some((mut answer, deadline)) = entered.take()
                    && tokio::time::Instant::now() < deadline
                {
                    paste_taken(&mut answer, deadline).await;
                }
                // A reader at the output's head before the paste: its first read is the
                // program's answer to it.
                let answer = write.then.as_ref().map(|_| output.reader_at_head());
                write_all(&fd, &lost, &write.bytes).await;
                if echoes && write.then.is_none() && write.bytes.len() <= KEYSTROKE && rx.is_empty()
                {
                    look_for_echo(&fd);
                }
                if let (Some((pause, bytes)), Some(mut answer)) = (&write.then, answer) {
                    let deadline = tokio::time::Instant::now() + PASTE_ENTER_MAX;
                    tokio::time::sleep(*pause).await;
                    paste_taken(&mut answer, deadline).await;
                    let reader = output.reader_at_head();
                    write_all(&fd, &lost, bytes).await;
                    entered = Some((reader, tokio::time::Instant::now() + PASTE_ENTER_MAX));
                }
                if let Some(done) = write.done
                    && done.send(()).is_err()
                {
                    tracing::trace!("nobody waits for this input's end");
                }
            }
        });
        (
            sender,
            InputWriter {
                task,
                queue,
                lost: counted,
            },
        )
    }
}

/// How long a program's output must pause after it began answering a paste before the
/// paste's Enter is written: a TUI draws a large paste over several reads, and on a loaded
/// machine an Enter written at its first output was taken while it still read the paste (the
/// prompt merged with the next one: 3 of 10 under load).
pub const PASTE_QUIET: std::time::Duration = std::time::Duration::from_millis(150);

/// Waits (until `deadline` at the most) for the program to take a paste: output, then
/// [`PASTE_QUIET`] without more. `answer` reads the output from where it was before the paste.
async fn paste_taken(answer: &mut corral_runtime::RingReader, deadline: tokio::time::Instant) {
    let mut seen = Vec::new();
    match tokio::time::timeout_at(deadline, answer.read(&mut seen, 1)).await {
        Err(_) => {
            tracing::debug!("no output after a paste; its Enter goes anyway");
            return;
        }
        Ok(corral_runtime::Read::Closed) => return,
        Ok(_) => {}
    }
    loop {
        seen.clear();
        let quiet = (tokio::time::Instant::now() + PASTE_QUIET).min(deadline);
        match tokio::time::timeout_at(quiet, answer.read(&mut seen, 64 * 1024)).await {
            // Quiet that long (or out of time): the paste is taken.
            Err(_) | Ok(corral_runtime::Read::Closed) => return,
            Ok(_) => {}
        }
    }
}

impl InputWriter {
    /// Lets the writer write what is queued, up to `within`, once the queue's senders are gone
    /// (it ends when the queue is empty and closed); what is left then is logged as lost.
    pub async fn finish(mut self, within: std::time::Duration) {
        if tokio::time::timeout(within, &mut self.task).await.is_err() {
            tracing::warn!(
                "input not delivered: the program did not take what was queued for it in time"
            );
        }
    }
}

impl Drop for InputWriter {
    fn drop(&mut self) {
        self.task.abort();
        // The queue's bytes (the write under way included: at most this much) go with the
        // task: counted, never dropped unsaid.
        let queued = self.queue.depth();
        if queued > 0 {
            self.lost.fetch_add(queued as u64, Ordering::Relaxed);
            tracing::warn!(
                lost = queued,
                "input not delivered: the process went away with it queued"
            );
        }
    }
}

/// Writes `bytes` to `fd`, waiting for writability; what cannot be delivered (the terminal hung
/// up, the process closed its input) is counted as lost and logged.
async fn write_all(fd: &AsyncFd<OwnedFd>, lost: &AtomicU64, bytes: &[u8]) {
    let mut written = 0;
    while written < bytes.len() {
        let mut guard = match fd.writable().await {
            Ok(guard) => guard,
            Err(e) => {
                lost.fetch_add((bytes.len() - written) as u64, Ordering::Relaxed);
                tracing::warn!(error = %e, lost = bytes.len() - written, "input not delivered");
                return;
            }
        };
        // After a hangup epoll keeps reporting the fd writable while write(2) says EAGAIN:
        // without this check the loop would spin.
        if guard.ready().is_write_closed() {
            lost.fetch_add((bytes.len() - written) as u64, Ordering::Relaxed);
            tracing::warn!(
                lost = bytes.len() - written,
                "input not delivered: terminal hung up"
            );
            return;
        }
        match guard.try_io(|inner| fd::write(inner.get_ref(), &bytes[written..])) {
            // A PTY master whose child side is gone accepts nothing: write(2) returns 0.
            Ok(Ok(0)) => {
                lost.fetch_add((bytes.len() - written) as u64, Ordering::Relaxed);
                tracing::warn!(
                    lost = bytes.len() - written,
                    "input not delivered: terminal closed"
                );
                return;
            }
            Ok(Ok(n)) => written += n,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => {
                // The process closed its input or is gone: these bytes cannot be delivered.
                lost.fetch_add((bytes.len() - written) as u64, Ordering::Relaxed);
                tracing::warn!(error = %e, lost = bytes.len() - written, "input not delivered");
                return;
            }
            Err(_would_block) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// A writer on a pipe (non-blocking, 64 KiB) whose read end the test holds.
    fn pipe_writer() -> (OwnedFd, InputQueue, InputWriter) {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        fd::set_nonblocking(&w).expect("O_NONBLOCK");
        let w = fd::register(w, tokio::io::Interest::WRITABLE).expect("registered");
        let ring = corral_runtime::Ring::new(1024);
        let (queue, writer) = InputWriter::start(w, Arc::default(), 1 << 20, ring, false);
        (r, queue, writer)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_keystroke_with_nothing_queued_is_written_at_once() {
        let (r, queue, _writer) = pipe_writer();
        queue.send(b"x".to_vec(), None, None).expect("send");
        // No await since: the writer task has not run, so the caller wrote it.
        assert_eq!(queue.depth(), 0);
        fd::set_nonblocking(&r).expect("O_NONBLOCK");
        let mut buf = [0u8; 8];
        assert_eq!(fd::read(&r, &mut buf).expect("written"), 1);
        assert_eq!(&buf[..1], b"x");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn input_written_at_once_never_overtakes_what_is_queued() {
        let (r, queue, writer) = pipe_writer();
        // More than the pipe holds: a part written at once, the rest queued.
        let big: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        queue.send(big.clone(), None, None).expect("send");
        assert!(queue.depth() > 0, "the rest is queued");
        // The program takes some (the writer task has not run: no await since), so a write
        // would fit now; a keystroke meanwhile still goes behind the queue, not through.
        let mut out = vec![0u8; 4096];
        let mut file = std::fs::File::from(r);
        file.read_exact(&mut out).expect("read");
        queue.send(b"Z".to_vec(), None, None).expect("send");
        let reader = std::thread::spawn(move || {
            file.read_to_end(&mut out).expect("read");
            out
        });
        drop(queue);
        writer.finish(std::time::Duration::from_secs(10)).await;
        let out = tokio::task::spawn_blocking(move || reader.join().expect("reader"))
            .await
            .expect("join");
        assert_eq!(out.len(), big.len() + 1);
        assert!(out[..big.len()] == big[..], "in order");
        assert_eq!(out.last(), Some(&b'Z'));
    }
}
