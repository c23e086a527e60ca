//! The asciicast v2 export of a segment log: records become `[seconds, "o", text]` lines, gaps
//! become markers, and a UTF-8 character split across two records is carried over whole.

use std::io::{self, Write};
use std::path::Path;

use super::scan::visit_records;
use super::*;
use crate::persist::codec::Record;

/// asciicast v2 header line.
#[derive(Serialize)]
pub(super) struct AsciicastHeader {
    /// Always 2.
    pub(super) version: u8,
    /// Terminal columns.
    pub(super) width: u16,
    /// Terminal rows.
    pub(super) height: u16,
    /// Unix time (seconds) of the first record; absent (it is optional in asciicast v2) when
    /// the log holds no output: no time is known, and 0 read as 1970.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) timestamp: Option<u64>,
    /// Players shorten pauses to this many seconds (a session idle for hours plays without
    /// them); the recording keeps the real times.
    pub(super) idle_time_limit: f64,
}

/// What [`AsciicastHeader::idle_time_limit`] says.
pub const IDLE_TIME_LIMIT: f64 = 2.0;

/// Decodes a byte stream arriving in pieces as UTF-8 (lossy), holding back a character that is
/// split across pieces until its end arrives.
#[derive(Default)]
pub(super) struct Utf8Carry {
    /// The incomplete character at the end of the last piece (at most 3 bytes).
    pub(super) pending: Vec<u8>,
}

impl Utf8Carry {
    /// Text of `pending + bytes`, except a trailing incomplete character, which is kept.
    fn feed(&mut self, bytes: &[u8]) -> String {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(bytes);
        let mut text = String::with_capacity(buf.len());
        let mut rest = &buf[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // invariant: from_utf8 vouched for the bytes before valid_up_to.
                    text.push_str(std::str::from_utf8(valid).expect("valid prefix"));
                    match e.error_len() {
                        // An invalid sequence: replaced, as from_utf8_lossy does.
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        // A character cut off at the end: wait for the rest of it.
                        None => {
                            self.pending = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        text
    }

    /// Whatever is held back, as text (a replacement character): the stream ended or broke.
    fn flush(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// The terminal's size from output offset `at` on (an asciicast `r` event there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resize {
    /// Output offset.
    pub at: u64,
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

pub(super) fn export_asciicast(
    dir: &Path,
    segments: &[Segment],
    out: &mut impl Write,
    width: u16,
    height: u16,
    resizes: &[Resize],
) -> io::Result<()> {
    // The header needs the first record's time: find it first (usually in the first frame).
    let mut first = None;
    visit_records(dir, segments, 0, |record| {
        if let Record::Data {
            time_ms, offset, ..
        } = record
        {
            first = Some((time_ms, offset));
            return Ok(false);
        }
        Ok(true)
    })?;
    let first_ms = first.map(|(ms, _)| ms);
    // The size at the first byte kept: the last resize before it, if any.
    let mut resizes = resizes.iter().peekable();
    let (mut width, mut height) = (width, height);
    while let Some(r) = resizes.next_if(|r| first.is_some_and(|(_, at)| r.at <= at)) {
        (width, height) = (r.cols, r.rows);
    }
    let header = AsciicastHeader {
        version: 2,
        width,
        height,
        timestamp: first_ms.map(|ms| ms / 1000),
        idle_time_limit: IDLE_TIME_LIMIT,
    };
    serde_json::to_writer(&mut *out, &header)?;
    out.write_all(b"\n")?;
    let Some(first_ms) = first_ms else {
        return Ok(());
    };
    let mut last_ms = first_ms;
    let mut carry = Utf8Carry::default();
    let event = |out: &mut dyn Write, ms: u64, code: &str, text: &str| -> io::Result<()> {
        let seconds = (ms - first_ms) as f64 / 1000.0;
        serde_json::to_writer(&mut *out, &(seconds, code, text))?;
        out.write_all(b"\n")
    };
    visit_records(dir, segments, 0, |record| {
        match record {
            Record::Data {
                time_ms,
                bytes,
                offset,
            } => {
                last_ms = last_ms.max(time_ms);
                // Each resize where it happened in the output: the bytes before it were
                // written at the size before.
                let mut rest = &bytes[..];
                let mut at = offset;
                while let Some(r) = resizes.next_if(|r| r.at < at + rest.len() as u64) {
                    let (before, after) = rest.split_at(r.at.saturating_sub(at) as usize);
                    let text = carry.feed(before);
                    if !text.is_empty() {
                        event(out, last_ms, "o", &text)?;
                    }
                    event(out, last_ms, "r", &format!("{}x{}", r.cols, r.rows))?;
                    at += before.len() as u64;
                    rest = after;
                }
                let text = carry.feed(rest);
                if !text.is_empty() {
                    event(out, last_ms, "o", &text)?;
                }
            }
            Record::Gap { from, to } => {
                let text = carry.flush();
                if !text.is_empty() {
                    event(out, last_ms, "o", &text)?;
                }
                event(out, last_ms, "m", &format!("output {from}..{to} lost"))?;
            }
        }
        Ok(true)
    })?;
    let text = carry.flush();
    if !text.is_empty() {
        event(out, last_ms, "o", &text)?;
    }
    for r in resizes {
        event(out, last_ms, "r", &format!("{}x{}", r.cols, r.rows))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_carry_matches_lossy_decoding() {
        let data = "héllo → wörld 🎉 end".as_bytes();
        let mut with_bad = data.to_vec();
        with_bad.insert(3, 0xff);
        with_bad.push(0xe2); // incomplete at the very end
        for split in 0..=with_bad.len() {
            for split2 in split..=with_bad.len() {
                let mut carry = Utf8Carry::default();
                let mut text = carry.feed(&with_bad[..split]);
                text += &carry.feed(&with_bad[split..split2]);
                text += &carry.feed(&with_bad[split2..]);
                text += &carry.flush();
                assert_eq!(
                    text,
                    String::from_utf8_lossy(&with_bad),
                    "splits {split} {split2}"
                );
            }
        }
    }
}
