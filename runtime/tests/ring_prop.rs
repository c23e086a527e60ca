//! Property tests of [`Ring`] against a model of the full written stream: whatever the
//! interleaving of appends, reads and reader creation, every reader's output is exactly the
//! stream except for explicit `Lagged` ranges, which cover exactly the missing bytes.
//! Capacities are small (1..=64) so the wrap and oversize paths run in almost every case.

use corral_runtime::{Lagged, Read, Ring, RingReader};
use proptest::prelude::*;

/// One step of a scenario.
#[derive(Debug, Clone)]
enum Op {
    /// Append these bytes (0..3×capacity of them).
    Append(Vec<u8>),
    /// Read with reader `index % readers`, up to `max` bytes; `wait` uses the async `read`
    /// (only when the model says it will not block).
    Read {
        index: usize,
        max: usize,
        wait: bool,
    },
    /// Create a reader at `pick % (head + 3)`: below the tail, inside, at or beyond the head.
    NewReader(u64),
    /// The writer goes away.
    Close,
}

fn op(capacity: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(any::<u8>(), 0..3 * capacity).prop_map(Op::Append),
        8 => (0..4usize, 0..=2 * capacity + 1, any::<bool>())
            .prop_map(|(index, max, wait)| Op::Read { index, max, wait }),
        2 => any::<u64>().prop_map(Op::NewReader),
        1 => Just(Op::Close),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, u64, Vec<Op>)> {
    (1..=64usize, 0..1_000u64).prop_flat_map(|(capacity, start)| {
        (
            Just(capacity),
            Just(start),
            prop::collection::vec(op(capacity), 1..150),
        )
    })
}

/// The full stream as written, with the ring's retention rule.
struct Model {
    capacity: usize,
    start: u64,
    stream: Vec<u8>,
    closed: bool,
}

impl Model {
    fn head(&self) -> u64 {
        self.start + self.stream.len() as u64
    }

    fn tail(&self) -> u64 {
        self.head()
            .saturating_sub(self.capacity as u64)
            .max(self.start)
    }

    fn bytes(&self, from: u64, len: usize) -> &[u8] {
        let at = (from - self.start) as usize;
        &self.stream[at..at + len]
    }

    /// The exact `Read` a read of at most `max` at `from` must return.
    fn expect(&self, from: u64, max: usize) -> Read {
        if from < self.tail() {
            Read::Lagged(Lagged {
                from,
                to: self.tail(),
            })
        } else if from >= self.head() {
            if self.closed {
                Read::Closed
            } else {
                Read::Empty
            }
        } else {
            let len = ((self.head() - from) as usize).min(max);
            Read::Data { offset: from, len }
        }
    }
}

/// One reader plus what it has produced: its data and the gaps it was told about.
struct Tracked {
    reader: RingReader,
    start: u64,
    data: Vec<u8>,
    /// Data and lagged ranges in order, as (from, to, lost).
    segments: Vec<(u64, u64, bool)>,
}

impl Tracked {
    fn read(&mut self, model: &Model, max: usize, wait: bool) -> Result<(), TestCaseError> {
        let before = self.reader.cursor();
        let expected = model.expect(before, max);
        let len_before = self.data.len();
        let read = if wait && expected != Read::Empty {
            // The model says data, a gap or the end is there, so this completes at once.
            futures::executor::block_on(self.reader.read(&mut self.data, max))
        } else {
            self.reader.try_read(&mut self.data, max)
        };
        prop_assert_eq!(read, expected);
        match read {
            Read::Data { offset, len } => {
                prop_assert_eq!(&self.data[len_before..], model.bytes(offset, len));
                prop_assert_eq!(self.reader.cursor(), offset + len as u64);
                if len > 0 {
                    self.segments.push((offset, offset + len as u64, false));
                }
            }
            Read::Lagged(lagged) => {
                prop_assert!(lagged.from < lagged.to);
                prop_assert_eq!(self.data.len(), len_before, "a Lagged appends nothing");
                prop_assert_eq!(self.reader.cursor(), lagged.to);
                self.segments.push((lagged.from, lagged.to, true));
            }
            Read::Empty | Read::Closed => {
                prop_assert_eq!(self.data.len(), len_before);
                prop_assert_eq!(self.reader.cursor(), before);
            }
        }
        Ok(())
    }

    /// Data plus lagged gaps cover `[start, cursor)` contiguously, and the data bytes are the
    /// stream's bytes at those offsets.
    fn check_coverage(&self, model: &Model) -> Result<(), TestCaseError> {
        let mut at = self.start;
        let mut data = &self.data[..];
        for &(from, to, lost) in &self.segments {
            prop_assert_eq!(from, at, "segments must be contiguous");
            if !lost {
                let len = (to - from) as usize;
                prop_assert_eq!(&data[..len], model.bytes(from, len));
                data = &data[len..];
            }
            at = to;
        }
        prop_assert!(data.is_empty());
        prop_assert_eq!(at, self.reader.cursor());
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn readers_see_the_stream_or_explicit_gaps((capacity, start, ops) in scenario()) {
        let ring = Ring::with_start(capacity, start);
        let mut model = Model { capacity, start, stream: Vec::new(), closed: false };
        let mut readers = vec![Tracked {
            reader: ring.reader(start).unwrap(),
            start,
            data: Vec::new(),
            segments: Vec::new(),
        }];
        prop_assert_eq!(ring.allocated(), 0);
        for op in ops {
            match op {
                Op::Append(bytes) => {
                    model.stream.extend_from_slice(&bytes);
                    prop_assert_eq!(ring.append(&bytes), model.head());
                }
                Op::Read { index, max, wait } => {
                    let n = readers.len();
                    readers[index % n].read(&model, max, wait)?;
                }
                Op::NewReader(pick) => {
                    let from = pick % (model.head() + 3);
                    match ring.reader(from) {
                        Ok(reader) => {
                            prop_assert!(from <= model.head());
                            if readers.len() < 4 {
                                readers.push(Tracked {
                                    reader,
                                    start: from,
                                    data: Vec::new(),
                                    segments: Vec::new(),
                                });
                            }
                        }
                        Err(err) => {
                            prop_assert!(from > model.head());
                            prop_assert_eq!((err.from, err.head), (from, model.head()));
                        }
                    }
                }
                Op::Close => {
                    model.closed = true;
                    ring.close();
                }
            }
            prop_assert!(ring.allocated() <= capacity);
            prop_assert_eq!(ring.head(), model.head());
            prop_assert_eq!(ring.tail(), model.tail());
            prop_assert_eq!(ring.is_closed(), model.closed);
        }
        // Drain every reader: it must end exactly at the head with full coverage.
        for tracked in &mut readers {
            let mut guard = 0;
            while tracked.reader.cursor() < model.head() {
                tracked.read(&model, capacity, false)?;
                guard += 1;
                prop_assert!(guard < 10, "drain did not progress");
            }
            tracked.check_coverage(&model)?;
            let lags = tracked.segments.iter().filter(|s| s.2).count() as u64;
            prop_assert_eq!(tracked.reader.lag_count(), lags);
        }
    }

    #[test]
    fn read_at_matches_the_model(
        (capacity, start, ops) in scenario(),
        probes in prop::collection::vec((any::<u64>(), 0..200usize), 1..40),
    ) {
        let ring = Ring::with_start(capacity, start);
        let mut model = Model { capacity, start, stream: Vec::new(), closed: false };
        for op in ops {
            match op {
                Op::Append(bytes) => {
                    model.stream.extend_from_slice(&bytes);
                    ring.append(&bytes);
                }
                Op::Close => {
                    model.closed = true;
                    ring.close();
                }
                Op::Read { .. } | Op::NewReader(_) => {}
            }
            prop_assert!(ring.allocated() <= capacity);
        }
        for (pick, max) in probes {
            // Offsets from below the start to a little past the head.
            let from = pick % (model.head() + 5);
            let mut out = vec![0xAA];
            let read = ring.read_at(from, &mut out, max);
            prop_assert_eq!(read, model.expect(from, max));
            prop_assert_eq!(out[0], 0xAA, "read_at appends, never overwrites");
            match read {
                Read::Data { offset, len } => {
                    prop_assert_eq!(&out[1..], model.bytes(offset, len));
                }
                _ => prop_assert_eq!(out.len(), 1),
            }
        }
    }
}
