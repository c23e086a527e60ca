//! Ring throughput: one writer thread appending 4 KiB chunks into a 1 MiB ring, one reader
//! taking up to 64 KiB per read, ~2 GiB in total; once with a `try_read` loop on a thread and
//! once with the async `read` on a tokio runtime. Goal: ≥ 2 GB/s for a single reader.
//!
//! Run: `cargo bench -p corral-runtime --bench ring`

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use corral_runtime::{Read, Ring, RingReader};

const CAPACITY: usize = 1 << 20;
const CHUNK: usize = 4 << 10;
const READ_MAX: usize = 64 << 10;
const TOTAL: u64 = 2 << 30;

/// What one reader saw.
#[derive(Default)]
struct Seen {
    bytes: u64,
    lags: u64,
    lost: u64,
}

impl Seen {
    /// Records one read; false once the ring is closed and drained.
    fn record(&mut self, read: Read) -> bool {
        match read {
            Read::Data { len, .. } => self.bytes += len as u64,
            Read::Lagged(lagged) => {
                self.lags += 1;
                self.lost += lagged.lost();
            }
            Read::Empty => {}
            Read::Closed => return false,
        }
        true
    }
}

/// Appends `TOTAL` bytes in `CHUNK`s, then closes; returns the time taken.
fn write_all(ring: &Ring) -> Duration {
    let chunk: Vec<u8> = (0..CHUNK).map(|i| i as u8).collect();
    let started = Instant::now();
    let mut written = 0;
    while written < TOTAL {
        ring.append(&chunk);
        written += CHUNK as u64;
    }
    ring.close();
    started.elapsed()
}

fn try_read_loop(mut reader: RingReader) -> Seen {
    let mut seen = Seen::default();
    let mut out = Vec::with_capacity(READ_MAX);
    loop {
        out.clear();
        let read = reader.try_read(&mut out, READ_MAX);
        if read == Read::Empty {
            std::hint::spin_loop();
        }
        if !seen.record(read) {
            return seen;
        }
    }
}

async fn async_read_loop(mut reader: RingReader) -> Seen {
    let mut seen = Seen::default();
    let mut out = Vec::with_capacity(READ_MAX);
    loop {
        out.clear();
        if !seen.record(reader.read(&mut out, READ_MAX).await) {
            return seen;
        }
    }
}

fn report(name: &str, wrote: Duration, total: Duration, seen: &Seen) {
    let gbps = |bytes: u64, time: Duration| bytes as f64 / time.as_secs_f64() / 1e9;
    println!(
        "{name:<18} read {:6.2} GB/s ({} MiB in {:.2?}), write {:6.2} GB/s, lagged {} times, lost {} MiB ({:.2}%)",
        gbps(seen.bytes, total),
        seen.bytes >> 20,
        total,
        gbps(TOTAL, wrote),
        seen.lags,
        seen.lost >> 20,
        seen.lost as f64 * 100.0 / TOTAL as f64,
    );
}

fn main() {
    // try_read loop on its own thread.
    let ring = Ring::new(CAPACITY);
    let reader = ring.reader(0).expect("0 is the head of a new ring");
    // Start the clock only once the reader's thread runs, so thread start-up is not lag.
    let ready = Arc::new(Barrier::new(2));
    let reader_ready = Arc::clone(&ready);
    let reading = thread::spawn(move || {
        reader_ready.wait();
        try_read_loop(reader)
    });
    ready.wait();
    let started = Instant::now();
    let wrote = write_all(&ring);
    let seen = reading.join().expect("reader thread");
    report("try_read thread", wrote, started.elapsed(), &seen);

    // Async read on a single-threaded runtime on its own thread.
    let ring = Ring::new(CAPACITY);
    let reader = ring.reader(0).expect("0 is the head of a new ring");
    let reader_ready = Arc::clone(&ready);
    let reading = thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        reader_ready.wait();
        runtime.block_on(async_read_loop(reader))
    });
    ready.wait();
    let started = Instant::now();
    let wrote = write_all(&ring);
    let seen = reading.join().expect("reader thread");
    report("async read", wrote, started.elapsed(), &seen);
}
