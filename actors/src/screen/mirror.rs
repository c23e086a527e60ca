//! Mirror: a viewer's own copy of a session's screen, fed with what the viewer receives (the
//! snapshot it starts with, then the live output, and the session's `resized` events where they
//! happen). `corral attach` keeps one so that it can draw the screen again, whole or a part of
//! it, when its terminal and the session differ in size or a notice was drawn over it —
//! without asking the server. The same parser, charsets and drawing as the server's screen.

use std::num::NonZeroU16;

use super::snapshot::{Untracked, format_screen};
use crate::charset::Charsets;

/// A vt100 screen following a session's output.
pub struct Mirror {
    parser: vt100::Parser<Untracked>,
    charsets: Charsets,
}

impl Mirror {
    /// A blank `rows`×`cols` screen (zero is taken as 1).
    pub fn new(rows: u16, cols: u16) -> Mirror {
        Mirror {
            parser: vt100::Parser::new_with_callbacks(nz(rows), nz(cols), 0, Untracked::default()),
            charsets: Charsets::default(),
        }
    }

    /// Follows output bytes (a snapshot's included).
    pub fn process(&mut self, bytes: &[u8]) {
        self.parser.process(&self.charsets.translate(bytes));
    }

    /// The session's terminal was resized (a `resized` event): what follows is at this size.
    pub fn set_size(&mut self, rows: u16, cols: u16) {
        self.parser.set_size(nz(rows), nz(cols));
    }

    /// Rows and columns.
    pub fn size(&self) -> (u16, u16) {
        let (rows, cols) = self.parser.screen().size();
        (rows.get(), cols.get())
    }

    /// The screen as it is, for reading a part of it (`rows_formatted`, the cursor, the modes).
    pub fn screen(&self) -> &vt100::Screen {
        self.parser.screen()
    }

    /// Escape sequences that draw the whole screen on a terminal of its size, from a full
    /// reset (as a snapshot does), ending in the output's charsets.
    pub fn draw(&self) -> Vec<u8> {
        let mut out = format_screen(self.parser.screen(), self.parser.callbacks());
        out.extend_from_slice(self.charsets.restore().as_bytes());
        out
    }
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("size", &self.size())
            .finish_non_exhaustive()
    }
}

fn nz(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN)
}
