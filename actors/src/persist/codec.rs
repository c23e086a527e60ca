//! The payload encoding of a log record: the one module that knows bincode.
//!
//! A segment file frames each record as `[len u32 LE][crc32 u32 LE][payload]` (see
//! [`segment`](super::segment)); this module turns a [`Record`] into that payload and back, with
//! bincode 2.0.1 (pinned: 3.0.0 is a `compile_error!`) through serde, standard configuration
//! (little endian, varint integers). Keeping bincode behind [`encode`] / [`decode`] means a
//! future format change touches this file only, and no bincode type leaks into the API.
//!
//! Wire shape: the enum variant index as a varint (`Data` = 0, `Gap` = 1), then the fields in
//! declaration order; `bytes` is a varint length followed by the raw bytes. New variants may only
//! be appended, so old segments stay readable.

use serde::{Deserialize, Serialize};

/// Largest payload [`decode`] accepts. It bounds the allocation a corrupt length inside a
/// payload could ask for; the segment layer never writes a payload this large.
pub const MAX_PAYLOAD_BYTES: usize = MAX_RECORD_BYTES + 64;

/// Most output bytes in one record; larger appends are split into several records by the
/// segment writer.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Most bytes a payload adds around a `Data` record's bytes: a variant tag and three varints of
/// at most 9 bytes each. Used to size records so a segment never exceeds its limit.
pub const MAX_DATA_OVERHEAD: usize = 1 + 9 + 9 + 9;

/// One entry of a session's scrollback log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// Output bytes `[offset, offset + bytes.len())` of the session.
    Data {
        /// Session output offset of `bytes[0]` (per byte, like the Ring's offsets).
        offset: u64,
        /// When the bytes were persisted, in milliseconds since the Unix epoch.
        time_ms: u64,
        /// The output bytes themselves.
        #[serde(with = "byte_buf")]
        bytes: Vec<u8>,
    },
    /// Output bytes `[from, to)` never reached the log (the persister lagged behind the Ring):
    /// recorded so the loss is explicit instead of silent.
    Gap {
        /// First missing offset.
        from: u64,
        /// First offset after the missing range.
        to: u64,
    },
}

impl Record {
    /// First offset this record covers.
    pub fn start(&self) -> u64 {
        match self {
            Record::Data { offset, .. } => *offset,
            Record::Gap { from, .. } => *from,
        }
    }

    /// First offset after this record, or `None` if it would overflow `u64` (only a corrupt or
    /// hostile record can do that).
    pub fn end(&self) -> Option<u64> {
        match self {
            Record::Data { offset, bytes, .. } => offset.checked_add(bytes.len() as u64),
            Record::Gap { to, .. } => Some(*to),
        }
    }
}

/// A payload that is not a valid [`Record`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// bincode could not decode it (message kept as text so no bincode type leaks out).
    #[error("undecodable record: {0}")]
    Decode(String),
    /// It decoded, but did not use every byte of the payload.
    #[error("record payload has {0} trailing bytes")]
    Trailing(usize),
    /// It is larger than [`MAX_PAYLOAD_BYTES`].
    #[error("record payload of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

/// Encodes a record into a payload.
pub fn encode(record: &Record) -> Vec<u8> {
    // invariant: serializing this plain enum into a Vec cannot fail (no maps or sequences of
    // unknown length, no I/O, and the limit in the configuration only applies to decoding).
    bincode::serde::encode_to_vec(record, bincode::config::standard())
        .expect("encoding a Record into memory cannot fail")
}

/// A [`Record`] that borrows its bytes, for writing: it encodes exactly like the `Record` it
/// mirrors (bincode writes the variant index and the fields, not the names), without copying
/// the output bytes into an owned record first.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum RecordRef<'a> {
    /// See [`Record::Data`].
    Data {
        /// Offset of `bytes[0]`.
        offset: u64,
        /// Milliseconds since the epoch.
        time_ms: u64,
        /// The bytes.
        #[serde(serialize_with = "byte_buf::serialize")]
        bytes: &'a [u8],
    },
    /// See [`Record::Gap`].
    Gap {
        /// First missing offset.
        from: u64,
        /// First offset after the missing range.
        to: u64,
    },
}

impl RecordRef<'_> {
    /// First offset covered.
    pub fn start(&self) -> u64 {
        match self {
            RecordRef::Data { offset, .. } => *offset,
            RecordRef::Gap { from, .. } => *from,
        }
    }

    /// First offset after the record, `None` on overflow.
    pub fn end(&self) -> Option<u64> {
        match self {
            RecordRef::Data { offset, bytes, .. } => offset.checked_add(bytes.len() as u64),
            RecordRef::Gap { to, .. } => Some(*to),
        }
    }
}

/// Appends the encoding of `record` to `out` (the same bytes [`encode`] gives for the owned
/// record).
pub fn encode_into(record: &RecordRef<'_>, out: &mut Vec<u8>) {
    // invariant: writing into a Vec cannot fail (see `encode`).
    bincode::serde::encode_into_std_write(record, out, bincode::config::standard())
        .expect("encoding a Record into memory cannot fail");
}

/// Decodes a payload produced by [`encode`]; the whole payload must be used.
pub fn decode(payload: &[u8]) -> Result<Record, CodecError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(CodecError::TooLarge(payload.len()));
    }
    // The limit makes bincode refuse a length prefix that claims more than a payload can hold
    // before it allocates for it.
    let config = bincode::config::standard().with_limit::<MAX_PAYLOAD_BYTES>();
    let (record, used): (Record, usize) = bincode::serde::decode_from_slice(payload, config)
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != payload.len() {
        return Err(CodecError::Trailing(payload.len() - used));
    }
    Ok(record)
}

/// Serializes `Vec<u8>` as one byte string (length + bytes) rather than a sequence of `u8`s, so
/// bincode copies it in one piece both ways.
mod byte_buf {
    use std::fmt;

    use serde::Serializer;
    use serde::de::{self, Deserializer, SeqAccess, Visitor};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // Bounded by the decoder's byte limit: each element consumes a payload byte.
            let mut out = Vec::new();
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_records_encode_like_owned_ones() {
        let bytes: Vec<u8> = (0..=255).cycle().take(70_000).collect();
        let owned = Record::Data {
            offset: 1 << 40,
            time_ms: 1_795_000_000_000,
            bytes: bytes.clone(),
        };
        let mut out = Vec::new();
        encode_into(
            &RecordRef::Data {
                offset: 1 << 40,
                time_ms: 1_795_000_000_000,
                bytes: &bytes,
            },
            &mut out,
        );
        assert_eq!(out, encode(&owned));
        assert_eq!(decode(&out).unwrap(), owned);
        let mut out = vec![7];
        encode_into(&RecordRef::Gap { from: 3, to: 9 }, &mut out);
        assert_eq!(out[1..], encode(&Record::Gap { from: 3, to: 9 })[..]);
    }

    #[test]
    fn round_trip_and_damage() {
        let records = [
            Record::Data {
                offset: 0,
                time_ms: 1,
                bytes: b"hello".to_vec(),
            },
            Record::Data {
                offset: u64::MAX - 1,
                time_ms: u64::MAX,
                bytes: vec![0xff; 300],
            },
            Record::Gap {
                from: 10,
                to: 1 << 40,
            },
        ];
        for r in &records {
            let p = encode(r);
            assert_eq!(decode(&p).unwrap(), *r);
            let mut longer = p.clone();
            longer.push(0);
            assert_eq!(decode(&longer), Err(CodecError::Trailing(1)));
            assert!(decode(&p[..p.len() - 1]).is_err());
        }
        // Data overhead bound holds for the largest integers.
        let big = Record::Data {
            offset: u64::MAX,
            time_ms: u64::MAX,
            bytes: vec![0; 1 << 20],
        };
        assert!(encode(&big).len() <= (1 << 20) + MAX_DATA_OVERHEAD);
        // A length prefix claiming a huge vector is refused, not allocated.
        assert!(
            decode(&[
                0, 0, 0, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
            ])
            .is_err()
        );
        assert!(decode(&[]).is_err());
    }
}
