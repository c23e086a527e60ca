//! The Ring's unit tests: offsets, wrap-around, lag ranges, readers woken and batched.

use std::time::Duration;

use super::*;

/// Guard so a broken wakeup fails the test instead of hanging it.
const GUARD: Duration = Duration::from_secs(5);

fn bytes(range: std::ops::Range<u32>) -> Vec<u8> {
    range.map(|i| (i % 251) as u8).collect()
}

/// Waits until an async reader has found nothing and parked, so a test exercises the wakeup
/// path rather than the fast path.
async fn until_parked(ring: &Ring) {
    tokio::time::timeout(GUARD, async {
        while ring.shared.state.lock().wake_at == u64::MAX {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
}

fn read_all(reader: &mut RingReader) -> (Vec<u8>, Vec<Read>) {
    let mut out = Vec::new();
    let mut reads = Vec::new();
    loop {
        match reader.try_read(&mut out, usize::MAX) {
            Read::Empty | Read::Closed => return (out, reads),
            read => reads.push(read),
        }
    }
}

#[test]
fn allocates_lazily_and_never_beyond_capacity() {
    let ring = Ring::new(10_000);
    assert_eq!(ring.allocated(), 0);
    ring.append(&[]);
    assert_eq!(ring.allocated(), 0, "an empty append allocates nothing");
    ring.append(b"hello");
    let first = ring.allocated();
    assert!((5..=MIN_ALLOC).contains(&first), "first allocation {first}");
    let mut seen = vec![first];
    for _ in 0..100 {
        ring.append(&[7; 333]);
        assert!(ring.allocated() <= 10_000);
        if seen.last() != Some(&ring.allocated()) {
            seen.push(ring.allocated());
        }
    }
    assert_eq!(ring.allocated(), 10_000);
    assert!(seen.len() >= 3, "grew in steps: {seen:?}");
    // Doubling: each step at most twice the previous (except the capped last one).
    for pair in seen.windows(2) {
        assert!(pair[1] <= (pair[0] * 2).max(MIN_ALLOC), "{seen:?}");
    }
}

#[test]
fn small_capacity_allocates_exactly_capacity() {
    let ring = Ring::new(3);
    ring.append(b"a");
    assert_eq!(ring.allocated(), 3);
    ring.append(b"bcdefg");
    assert_eq!(ring.allocated(), 3);
}

#[test]
fn wraps_around_correctly() {
    let ring = Ring::new(8);
    let data = bytes(0..100);
    let mut at = 0;
    for chunk in [3, 5, 1, 7, 2, 6, 8, 4] {
        ring.append(&data[at..at + chunk]);
        at += chunk;
        let head = ring.head();
        assert_eq!(head, at as u64);
        assert_eq!(ring.tail(), head.saturating_sub(8));
        // Every retained byte, from every start offset, reads back correctly.
        for from in ring.tail()..head {
            let mut out = Vec::new();
            let read = ring.read_at(from, &mut out, usize::MAX);
            let len = (head - from) as usize;
            assert_eq!(read, Read::Data { offset: from, len });
            assert_eq!(out, &data[from as usize..at]);
        }
    }
    // Partial reads across the wrap point.
    let mut reader = ring.reader(ring.tail()).unwrap();
    let mut out = Vec::new();
    while let Read::Data { .. } = reader.try_read(&mut out, 3) {}
    assert_eq!(out, &data[at - 8..at]);
}

#[test]
fn oversize_append_keeps_last_capacity_bytes() {
    let ring = Ring::new(10);
    ring.append(b"xyz");
    let big = bytes(0..25);
    assert_eq!(ring.append(&big), 28);
    assert_eq!((ring.tail(), ring.head()), (18, 28));
    let mut out = Vec::new();
    assert_eq!(
        ring.read_at(18, &mut out, 100),
        Read::Data {
            offset: 18,
            len: 10
        }
    );
    assert_eq!(out, &big[15..]);
    assert_eq!(ring.allocated(), 10);
    // And once full, again.
    let big2 = bytes(100..137);
    ring.append(&big2);
    out.clear();
    assert_eq!(
        ring.read_at(ring.tail(), &mut out, 100),
        Read::Data {
            offset: 55,
            len: 10
        }
    );
    assert_eq!(out, &big2[27..]);
}

#[test]
fn reader_behind_tail_gets_exact_lagged_then_data() {
    let ring = Ring::new(4);
    ring.append(b"abcdefghij");
    let mut reader = ring.reader(2).unwrap();
    let mut out = Vec::new();
    assert_eq!(
        reader.try_read(&mut out, 100),
        Read::Lagged(Lagged { from: 2, to: 6 })
    );
    assert!(out.is_empty(), "a Lagged appends nothing");
    assert_eq!((reader.cursor(), reader.lag_count()), (6, 1));
    assert_eq!(
        reader.try_read(&mut out, 100),
        Read::Data { offset: 6, len: 4 }
    );
    assert_eq!(out, b"ghij");
    assert_eq!(reader.try_read(&mut out, 100), Read::Empty);

    // A live reader overtaken by the writer lags too.
    ring.append(b"0123456");
    assert_eq!(
        reader.try_read(&mut out, 100),
        Read::Lagged(Lagged { from: 10, to: 13 })
    );
    assert_eq!(reader.lag_count(), 2);
    assert_eq!(Lagged { from: 10, to: 13 }.lost(), 3);
}

#[test]
fn reader_beyond_head_is_an_error() {
    let ring = Ring::new(16);
    ring.append(b"abc");
    let err = ring.reader(4).unwrap_err();
    assert_eq!(err, OffsetBeyondHead { from: 4, head: 3 });
    let message = err.to_string();
    assert!(message.contains('4') && message.contains('3'), "{message}");
    let mut at_head = ring.reader(3).unwrap();
    assert_eq!(at_head.try_read(&mut Vec::new(), 10), Read::Empty);
    assert_eq!(ring.reader_at_head().cursor(), 3);
}

#[test]
fn close_drains_then_reports_closed() {
    let ring = Ring::new(16);
    let mut reader = ring.reader(0).unwrap();
    ring.append(b"bye");
    assert!(!ring.is_closed());
    ring.close();
    assert!(ring.is_closed());
    let mut out = Vec::new();
    assert_eq!(
        reader.try_read(&mut out, 2),
        Read::Data { offset: 0, len: 2 }
    );
    assert_eq!(
        reader.try_read(&mut out, 2),
        Read::Data { offset: 2, len: 1 }
    );
    assert_eq!(reader.try_read(&mut out, 2), Read::Closed);
    assert_eq!(reader.try_read(&mut out, 2), Read::Closed);
    assert_eq!(out, b"bye");
    assert_eq!(ring.read_at(3, &mut out, 2), Read::Closed);
    // A lagging reader still learns of its loss before Closed.
    let small = Ring::new(2);
    small.append(b"abcd");
    small.close();
    let (out, reads) = read_all(&mut small.reader(0).unwrap());
    assert_eq!(
        reads,
        vec![
            Read::Lagged(Lagged { from: 0, to: 2 }),
            Read::Data { offset: 2, len: 2 }
        ]
    );
    assert_eq!(out, b"cd");
}

#[test]
fn zero_capacity_retains_nothing() {
    let ring = Ring::new(0);
    assert_eq!(ring.append(b"abc"), 3);
    assert_eq!((ring.tail(), ring.head(), ring.allocated()), (3, 3, 0));
    let mut reader = ring.reader(0).unwrap();
    assert_eq!(
        reader.try_read(&mut Vec::new(), 10),
        Read::Lagged(Lagged { from: 0, to: 3 })
    );
    assert_eq!(reader.try_read(&mut Vec::new(), 10), Read::Empty);
}

#[test]
fn with_start_resumes_numbering() {
    let ring = Ring::with_start(4, 1_000);
    assert_eq!((ring.tail(), ring.head()), (1_000, 1_000));
    assert!(ring.reader(999).is_ok(), "below tail is allowed (it lags)");
    assert!(ring.reader(1_001).is_err());
    let mut reader = ring.reader(1_000).unwrap();
    assert_eq!(ring.append(b"abcdef"), 1_006);
    assert_eq!(ring.tail(), 1_002);
    let mut out = Vec::new();
    assert_eq!(
        reader.try_read(&mut out, 10),
        Read::Lagged(Lagged {
            from: 1_000,
            to: 1_002
        })
    );
    assert_eq!(
        reader.try_read(&mut out, 10),
        Read::Data {
            offset: 1_002,
            len: 4
        }
    );
    assert_eq!(out, b"cdef");
    let mut early = ring.reader(500).unwrap();
    assert_eq!(
        early.try_read(&mut out, 10),
        Read::Lagged(Lagged {
            from: 500,
            to: 1_002
        })
    );
}

#[test]
fn max_zero_reads_nothing() {
    let ring = Ring::new(4);
    ring.append(b"ab");
    let mut reader = ring.reader(0).unwrap();
    let mut out = Vec::new();
    assert_eq!(
        reader.try_read(&mut out, 0),
        Read::Data { offset: 0, len: 0 }
    );
    assert_eq!(reader.cursor(), 0);
    assert!(out.is_empty());
}

#[test]
fn lagged_serializes() {
    let lagged = Lagged { from: 3, to: 9 };
    let json = serde_json::to_string(&lagged).unwrap();
    assert_eq!(json, r#"{"from":3,"to":9}"#);
    assert_eq!(serde_json::from_str::<Lagged>(&json).unwrap(), lagged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_read_wakes_on_append() {
    let ring = Ring::new(64);
    let mut reader = ring.reader(0).unwrap();
    let task = tokio::spawn(async move {
        let mut out = Vec::new();
        let read = reader.read(&mut out, 64).await;
        (read, out)
    });
    until_parked(&ring).await;
    ring.append(b"hi");
    let (read, out) = tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
    assert_eq!(read, Read::Data { offset: 0, len: 2 });
    assert_eq!(out, b"hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_a_batch_wakes_once_it_is_there_not_on_every_append() {
    let ring = Ring::new(1024);
    ring.set_batching(true);
    let reader = ring.reader(0).unwrap();
    let task = tokio::spawn(async move { reader.wait_for(100).await });
    until_parked(&ring).await;
    for _ in 0..9 {
        ring.append(&[7; 10]);
        // Below the batch: the waiter's mark stays, so no append has notified anyone.
        assert_eq!(ring.shared.state.lock().wake_at, 100);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!task.is_finished(), "woke with 90 of 100 bytes");
    ring.append(&[7; 10]);
    tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
    assert_eq!(ring.shared.state.lock().wake_at, u64::MAX);
    // A closed ring ends the wait too.
    let reader = ring.reader(100).unwrap();
    let task = tokio::spawn(async move { reader.wait_for(1 << 20).await });
    until_parked(&ring).await;
    ring.close();
    tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_batches_ends_a_pending_batch_wait_but_not_later_ones() {
    let ring = Ring::new(1024);
    // Nobody waits: a no-op (no epoch bump a later wait could mistake for its own).
    ring.set_batching(true);
    ring.end_batches();
    assert_eq!(ring.shared.state.lock().batch_epoch, 0);
    let reader = ring.reader(0).unwrap();
    let task = tokio::spawn(async move {
        reader.wait_for(100).await;
        reader
    });
    until_parked(&ring).await;
    ring.append(&[7; 10]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!task.is_finished(), "woke with 10 of 100 bytes");
    ring.end_batches();
    let reader = tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
    // A wait that starts after the cue waits for its own batch (or the next cue).
    let task = tokio::spawn(async move { reader.wait_for(100).await });
    until_parked(&ring).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!task.is_finished(), "an old cue ended a new wait");
    ring.end_batches();
    tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_batch_wait_outlives_the_flood() {
    let ring = Ring::new(1024);
    let reader = ring.reader(0).unwrap();
    // Not batching: no wait at all.
    assert!(!reader.batching());
    tokio::time::timeout(GUARD, reader.wait_for(100))
        .await
        .unwrap();
    ring.set_batching(true);
    assert!(reader.batching());
    let task = tokio::spawn(async move {
        reader.wait_for(100).await;
        reader
    });
    until_parked(&ring).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!task.is_finished(), "woke with nothing while batching");
    // The flood ends: the pending wait ends, and a wait begun afterwards returns at once.
    ring.set_batching(false);
    let reader = tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
    tokio::time::timeout(GUARD, reader.wait_for(100))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_read_wakes_on_close() {
    let ring = Ring::new(64);
    let mut reader = ring.reader(0).unwrap();
    let task = tokio::spawn(async move { reader.read(&mut Vec::new(), 64).await });
    until_parked(&ring).await;
    ring.close();
    let read = tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
    assert_eq!(read, Read::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_streams_everything_to_many_readers() {
    let ring = Ring::new(1 << 20);
    let data = bytes(0..200_000);
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let mut reader = ring.reader(0).unwrap();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                match reader.read(&mut out, 1000).await {
                    Read::Data { .. } => {}
                    Read::Closed => return out,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }));
    }
    let writer_ring = ring.clone();
    let writer_data = data.clone();
    let writer = tokio::spawn(async move {
        for chunk in writer_data.chunks(777) {
            writer_ring.append(chunk);
            tokio::task::yield_now().await;
        }
        writer_ring.close();
    });
    tokio::time::timeout(GUARD, writer).await.unwrap().unwrap();
    for task in tasks {
        let out = tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
        assert!(out == data, "a reader's stream differs");
    }
}

#[tokio::test]
async fn dropping_a_read_future_loses_nothing() {
    let ring = Ring::new(64);
    let mut reader = ring.reader(0).unwrap();
    let mut out = Vec::new();
    // Cancelled while waiting: no state change.
    let timed_out = tokio::time::timeout(Duration::from_millis(5), reader.read(&mut out, 8))
        .await
        .is_err();
    assert!(timed_out);
    assert_eq!(reader.cursor(), 0);
    ring.append(b"kept");
    // The next read starts exactly where the cancelled one would have.
    let read = tokio::time::timeout(GUARD, reader.read(&mut out, 8))
        .await
        .unwrap();
    assert_eq!(read, Read::Data { offset: 0, len: 4 });
    assert_eq!(out, b"kept");
}

#[test]
fn ring_is_send_and_sync_and_read_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_sync<T: Sync>() {}
    assert_sync::<Ring>();
    assert_sync::<RingReader>();
    let ring = Ring::new(4);
    let mut reader = ring.reader(0).unwrap();
    let mut out = Vec::new();
    let future = reader.read(&mut out, 4);
    assert_send(&future);
}

#[test]
fn a_skip_is_a_lag_for_every_reader_behind_it_and_appends_land_after_it() {
    for (cap, before, skip) in [(16, 5, 9), (16, 5, 40), (16, 30, 50), (0, 3, 7)] {
        let ring = Ring::with_start(cap, 100);
        ring.append(&vec![1; before]);
        let mut reader = ring.reader(100).unwrap();
        let head = 100 + before as u64;
        ring.skip_to(head - 1);
        assert_eq!(ring.head(), head, "never backwards");
        ring.skip_to(head + skip);
        assert_eq!((ring.head(), ring.tail()), (head + skip, head + skip));
        let mut out = Vec::new();
        assert_eq!(
            reader.try_read(&mut out, 64),
            Read::Lagged(Lagged {
                from: 100,
                to: head + skip
            })
        );
        ring.append(b"abc");
        if cap > 0 {
            assert_eq!(
                reader.try_read(&mut out, 64),
                Read::Data {
                    offset: head + skip,
                    len: 3
                }
            );
            assert_eq!(out, b"abc");
            // Past the wrap, every byte still lands where it is read back.
            let more: Vec<u8> = (0..40u8).collect();
            ring.append(&more);
            out.clear();
            let mut at = ring.tail();
            while let Read::Data { len, .. } = ring.read_at(at, &mut out, 64) {
                at += len as u64;
            }
            assert_eq!(out, more[40 - cap..]);
        }
    }
}
