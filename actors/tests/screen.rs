//! Tests of the headless screen (`corral_actors::screen`) with a real vt100 and a real Ring: a
//! snapshot drawn on a fresh (or dirty) terminal must look exactly like a terminal that saw the
//! whole stream, continue seamlessly from its offset, and stay bounded when the ring lagged.

use std::num::NonZeroU16;
use std::time::Duration;

use corral_actors::screen::{CHUNK, Emulator, Follow, Screen, ScreenArgs, ScreenMsg, Snapshot};
use corral_runtime::{Read, Ring};
use ractor::Actor;

const ROWS: u16 = 24;
const COLS: u16 = 80;

/// A vt100 parser of the given size without scrollback (a viewer drawing a snapshot).
fn parser(rows: u16, cols: u16) -> vt100::Parser {
    let rows = NonZeroU16::new(rows).expect("test sizes are non-zero");
    let cols = NonZeroU16::new(cols).expect("test sizes are non-zero");
    vt100::Parser::new(rows, cols, 0)
}

/// What a terminal that saw exactly `bytes` shows.
fn reference(rows: u16, cols: u16, bytes: &[u8]) -> vt100::Parser {
    let mut p = parser(rows, cols);
    p.process(bytes);
    p
}

/// What a viewer shows after drawing `snap` on a fresh terminal of the snapshot's size.
fn replay(snap: &Snapshot) -> vt100::Parser {
    reference(snap.rows, snap.cols, &snap.bytes)
}

/// Every cell (contents and attributes), the cursor and the screen modes are identical.
fn assert_same_screen(expected: &vt100::Screen, actual: &vt100::Screen, what: &str) {
    assert_eq!(expected.size(), actual.size(), "{what}: size");
    let (rows, cols) = expected.size();
    for r in 0..rows.get() {
        for c in 0..cols.get() {
            let e = expected.cell(r, c).expect("cell within the screen");
            let a = actual.cell(r, c).expect("cell within the screen");
            let look = |x: &vt100::Cell| {
                (
                    x.contents().to_owned(),
                    x.fgcolor(),
                    x.bgcolor(),
                    x.bold(),
                    x.italic(),
                    x.underline(),
                    x.inverse(),
                    x.is_wide(),
                )
            };
            assert_eq!(look(e), look(a), "{what}: cell ({r},{c})");
        }
    }
    assert_eq!(
        expected.cursor_position(),
        actual.cursor_position(),
        "{what}: cursor position"
    );
    assert_eq!(
        expected.hide_cursor(),
        actual.hide_cursor(),
        "{what}: cursor visibility"
    );
    assert_eq!(
        expected.alternate_screen(),
        actual.alternate_screen(),
        "{what}: alternate screen"
    );
}

/// A screen drawn with absolute cursor moves, 16/256/true colours, bold, wide characters and
/// erase-in-line, leaving the cursor somewhere in the middle with non-default attributes.
fn drawing() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"$ first line of output\r\nsecond line\r\n");
    b.extend_from_slice(b"\x1b[5;10H\x1b[31mred\x1b[42mgreen-bg\x1b[1mbold-too\x1b[0m plain");
    b.extend_from_slice(b"\x1b[8;1Hthis line gets cut here|and this part is erased");
    b.extend_from_slice(b"\x1b[8;24H\x1b[K");
    b.extend_from_slice(b"\x1b[9;5H\x1b[38;5;200m256-colour\x1b[48;2;10;20;30m truecolour bg");
    b.extend_from_slice(
        "\x1b[0m\x1b[12;30H\x1b[3;4;7mitalic underline inverse\x1b[0m 日本語".as_bytes(),
    );
    b.extend_from_slice(b"\x1b[24;70H\x1b[1;31;42mcorner!!!!");
    b.extend_from_slice(b"\x1b[0m\x1b[15;1H\x1b[33;44mhalf\x1b[2K\x1b[16;3Hafter-EL2");
    b.extend_from_slice(b"\x1b[20;40H\x1b[1;35m");
    b
}

#[test]
fn snapshot_reproduces_cells_attributes_and_cursor() {
    let ring = Ring::new(1 << 20);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    let bytes = drawing();
    ring.append(&bytes);

    let snap = em.snapshot();
    assert!(!snap.approximate);
    assert_eq!((snap.rows, snap.cols), (ROWS, COLS));
    assert_eq!(snap.offset, ring.head());

    let expected = reference(ROWS, COLS, &bytes);
    assert_same_screen(expected.screen(), replay(&snap).screen(), "fresh terminal");

    // The snapshot starts with a full reset, so a terminal left in any state draws it right.
    let mut dirty = parser(ROWS, COLS);
    dirty.process(b"\x1b[?1049h\x1b[?25l\x1b[41mgarbage everywhere\x1b[10;10Hmore\x1b[1m");
    dirty.process(&snap.bytes);
    assert_same_screen(expected.screen(), dirty.screen(), "dirty terminal");
}

#[test]
fn snapshot_pending_wrap_at_the_right_margin() {
    // A full last column leaves the cursor "past the end" until the next character; the
    // snapshot must put it back there, not one column earlier.
    let ring = Ring::new(1 << 16);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    let mut bytes = b"\x1b[3;1H".to_vec();
    bytes.extend(std::iter::repeat_n(b'x', usize::from(COLS)));
    ring.append(&bytes);
    let snap = em.snapshot();
    let mut expected = reference(ROWS, COLS, &bytes);
    let mut shown = replay(&snap);
    assert_same_screen(expected.screen(), shown.screen(), "pending wrap");
    expected.process(b"y");
    shown.process(b"y");
    assert_same_screen(expected.screen(), shown.screen(), "after the wrap");
}

#[test]
fn snapshot_of_the_alternate_screen() {
    let ring = Ring::new(1 << 20);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    let mut bytes = b"$ vim notes.txt\r\nprimary screen text".to_vec();
    // What a full-screen program does: alternate screen, hidden cursor, input modes, draw.
    bytes.extend_from_slice(b"\x1b[?1049h\x1b[?25l\x1b[?1h\x1b=\x1b[?2004h\x1b[?1000h\x1b[?1006h");
    bytes.extend_from_slice(b"\x1b[H\x1b[2J\x1b[1;1H\x1b[7m notes.txt \x1b[0m");
    bytes.extend_from_slice(b"\x1b[3;1H\x1b[32mgreen text\x1b[3;20H\x1b[1;34mbold blue");
    bytes.extend_from_slice(b"\x1b[24;1H\x1b[44m-- INSERT --\x1b[K\x1b[0m\x1b[5;7H");
    ring.append(&bytes);

    let snap = em.snapshot();
    let mut expected = reference(ROWS, COLS, &bytes);
    let mut shown = replay(&snap);
    assert!(shown.screen().alternate_screen());
    assert_same_screen(expected.screen(), shown.screen(), "alternate screen");
    // Input modes survive too (vt100 reproduces these).
    let modes = |s: &vt100::Screen| {
        (
            s.application_cursor(),
            s.application_keypad(),
            s.bracketed_paste(),
            s.mouse_protocol_mode(),
            s.mouse_protocol_encoding(),
        )
    };
    assert_eq!(modes(expected.screen()), modes(shown.screen()));
    assert!(shown.screen().bracketed_paste());

    // Leaving the alternate screen brings back the primary contents and cursor.
    expected.process(b"\x1b[?1049l");
    shown.process(b"\x1b[?1049l");
    assert!(!shown.screen().alternate_screen());
    assert_same_screen(
        expected.screen(),
        shown.screen(),
        "back on the primary screen",
    );
}

/// DEC line drawing (`ESC ( 0`, and G1 with SO/SI), which vt100 does not follow: a snapshot
/// draws the boxes the program drew (as Unicode, which the viewer draws the same), not the
/// letters `lqqqk`, and ends in the charset the program left on, so the live output that
/// follows draws as for a viewer that saw everything.
#[test]
fn snapshots_draw_dec_line_drawing_and_keep_its_charset() {
    let ring = Ring::new(1 << 20);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    ring.append(b"\x1b(0lqqqk\r\nx ab x\r\nmqqqj\x1b(B ascii\r\n\x1b)0\x0elqk\x0f q\r\n\x0ex");
    let snap = em.snapshot();
    let text = String::from_utf8_lossy(&snap.bytes).to_string();
    let shown = replay(&snap).screen().contents();
    assert!(
        shown.starts_with("┌───┐\n│ ▒␉ │\n└───┘ ascii\n┌─┐ q\n│"),
        "{shown:?}"
    );
    assert!(
        text.ends_with("\x1b)0\x0e"),
        "G1 still shifted in: {text:?}"
    );
    // The live output after it, through a terminal that follows charsets as xterm.js does: the
    // restore puts it into G1 graphics, so `q` draws a line.
    let mut after = snap.bytes.clone();
    after.extend_from_slice(b"q");
    let mut live = corral_actors::charset::Charsets::default();
    let drawn = String::from_utf8(live.translate(&after).into_owned()).unwrap();
    assert!(drawn.ends_with("\x1b)0\x0e─"), "{drawn:?}");
}

/// A restart: the new process starts from plain modes, not from its predecessor's alternate
/// screen, mouse reporting, hidden cursor and keypad (what a viewer would otherwise keep, and a
/// click would type mouse reports into the new program); what the screen showed stays, and a
/// resize announced at the same offset does not cancel the reset.
#[test]
fn a_new_process_starts_from_plain_modes() {
    let ring = Ring::new(1 << 20);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    ring.append(b"primary line\r\n\x1b[?1049h\x1b[?25l\x1b[?1h\x1b=\x1b[?2004h\x1b[?1000h\x1b[?1006hin the tui");
    let at = ring.head();
    em.new_process_at(at);
    em.resize_at(at, ROWS, COLS + 10);
    ring.append(b"$ ");
    let shown = replay(&em.snapshot());
    let s = shown.screen();
    assert!(!s.alternate_screen());
    assert!(!s.hide_cursor());
    assert!(!s.application_cursor() && !s.application_keypad() && !s.bracketed_paste());
    assert_eq!(s.mouse_protocol_mode(), vt100::MouseProtocolMode::None);
    assert!(s.contents().contains("primary line"), "{}", s.contents());
    assert!(s.contents().contains("$ "), "{}", s.contents());
    assert_eq!((s.size().0.get(), s.size().1.get()), (ROWS, COLS + 10));
    // A program on the primary screen: the new one's output goes on below the old (leaving an
    // alternate screen it is not on would restore the cursor to the top and overwrite it).
    let ring = Ring::new(1 << 20);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    ring.append(b"line 1\r\nline 2\r\n\x1b[?25l\x1b]0;old program\x07");
    em.new_process_at(ring.head());
    ring.append(b"SECOND");
    let snapshot = em.snapshot();
    let shown = replay(&snapshot);
    assert_eq!(shown.screen().contents(), "line 1\nline 2\nSECOND");
    assert!(!shown.screen().hide_cursor());
    // Nor its window title: a page opened after a restart kept the old program's in its tab.
    let text = String::from_utf8_lossy(&snapshot.bytes).into_owned();
    assert!(!text.contains("old program"), "{text:?}");
    // Nor does its scroll region (the next program's output scrolled in rows 5-10), and the
    // cursor stays where the last one left it.
    let ring = Ring::new(1 << 20);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    ring.append(b"\x1b[2J\x1b[5;10r\x1b[4h\x1b[5;1H");
    em.new_process_at(ring.head());
    let lines: Vec<u8> = (1..=40)
        .flat_map(|i| format!("{i}\r\n").into_bytes())
        .collect();
    ring.append(&lines);
    let mut plain = reference(ROWS, COLS, b"\x1b[2J\x1b[5;1H");
    plain.process(&lines);
    assert_same_screen(plain.screen(), replay(&em.snapshot()).screen(), "restarted");
    // Without a new process, the modes stay (the same program redraws after a resize).
    let ring = Ring::new(1 << 20);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    ring.append(b"\x1b[?1049h\x1b[?1000h");
    em.resize_at(ring.head(), ROWS, COLS + 10);
    let shown = replay(&em.snapshot());
    assert!(shown.screen().alternate_screen());
    assert_ne!(
        shown.screen().mouse_protocol_mode(),
        vt100::MouseProtocolMode::None
    );
}

#[test]
fn offset_continues_the_stream_seamlessly() {
    let ring = Ring::new(1 << 20);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    let before = drawing();
    ring.append(&before);
    let snap = em.snapshot();
    assert_eq!(snap.offset, ring.head());
    assert_eq!(snap.offset, before.len() as u64);

    // More output arrives; a viewer shows the snapshot, then reads the ring from `offset`.
    let after = b"\x1b[0m\r\nmore output\x1b[2;5H\x1b[36mcyan\x1b[K\r\n\x1b[?1049htui\x1b[3;3Hx";
    ring.append(after);
    let mut shown = replay(&snap);
    let mut rest = Vec::new();
    match ring.read_at(snap.offset, &mut rest, usize::MAX) {
        Read::Data { offset, len } => {
            assert_eq!(offset, snap.offset);
            assert_eq!(len, after.len());
        }
        other => panic!("expected data after the snapshot offset, got {other:?}"),
    }
    shown.process(&rest);

    let mut all = before.clone();
    all.extend_from_slice(after);
    assert_same_screen(reference(ROWS, COLS, &all).screen(), shown.screen(), "live");

    // And a later snapshot agrees with both.
    let again = em.snapshot();
    assert_eq!(again.offset, ring.head());
    assert_same_screen(shown.screen(), replay(&again).screen(), "second snapshot");
}

/// One line of busy output: a colour change and a counter, so a cut can land mid-escape.
fn busy_line(i: usize) -> String {
    format!(
        "\x1b[3{}mline {i:07} of a long noisy build log\x1b[0m\r\n",
        i % 8
    )
}

#[test]
fn lag_rebuilds_from_the_tail_and_stays_bounded() {
    let ring = Ring::new(4096);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    let mut expected = parser(ROWS, COLS);
    let mut written = 0usize;
    let mut i = 0;
    while written < 1 << 20 {
        let line = busy_line(i);
        ring.append(line.as_bytes());
        expected.process(line.as_bytes());
        written += line.len();
        i += 1;
    }
    assert!(ring.tail() > 0, "the ring must have dropped bytes");

    let snap = em.snapshot();
    // The retained lines scrolled a whole screen in after the cut: exact (see below), and
    // said so (every late viewer was told "may be incomplete" over it).
    assert!(!snap.approximate);
    assert_eq!(snap.offset, ring.head());
    assert!(em.rebuilds() >= 1);
    // What the ring dropped, and the few bytes up to the first escape sequence after the cut.
    assert!(
        (ring.tail()..ring.tail() + 64).contains(&em.lost_bytes()),
        "{} lost, tail {}",
        em.lost_bytes(),
        ring.tail()
    );
    let bound = 4 * usize::from(ROWS) * usize::from(COLS) * 20;
    assert!(
        snap.bytes.len() <= bound,
        "snapshot of {} bytes exceeds {bound}",
        snap.bytes.len()
    );
    // 4 KiB hold far more than a screenful of these lines: every visible line is the real one,
    // including the last lines printed.
    let shown = replay(&snap);
    assert_eq!(
        expected.screen().contents(),
        shown.screen().contents(),
        "visible text after a lag"
    );
    assert!(
        shown
            .screen()
            .contents()
            .contains(&format!("line {:07}", i - 1))
    );
    assert_same_screen(expected.screen(), shown.screen(), "after lag");
}

/// A program that draws in place (a counter, `top`): nothing scrolls.
fn counter_frame(i: usize) -> String {
    format!(
        "\x1b[10;5Hcounter {i:08}\x1b[11;5H\x1b[3{}mcolour\x1b[0m",
        i % 8
    )
}

#[test]
fn approximate_until_the_screen_is_cleared() {
    let ring = Ring::new(4096);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    em.snapshot(); // allocate the parser, as a first viewer would
    for i in 0..2000 {
        ring.append(counter_frame(i).as_bytes());
    }
    em.catch_up();
    assert!(em.is_approximate());
    assert!(em.snapshot().approximate);

    // More output that does not clear keeps it approximate.
    ring.append(b"still going\r\n");
    assert!(em.snapshot().approximate);

    // `clear` (split across two catch-ups, to cross a chunk boundary) makes it exact again.
    ring.append(b"\x1b[H\x1b[");
    em.catch_up();
    assert!(em.is_approximate());
    ring.append(b"2J\x1b[3Jfresh prompt $ ");
    let snap = em.snapshot();
    assert!(!snap.approximate);
    let mut expected = parser(ROWS, COLS);
    expected.process(b"\x1b[H\x1b[2J\x1b[3Jfresh prompt $ ");
    assert_same_screen(expected.screen(), replay(&snap).screen(), "after clear");
}

#[test]
fn emulator_is_lazy() {
    let ring = Ring::new(1 << 20);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    assert!(!em.has_parser());
    ring.append(&drawing());
    em.catch_up();
    em.resize(30, 100);
    assert!(
        !em.has_parser(),
        "idle catch-ups and resizes allocate nothing"
    );
    assert_eq!(em.position(), 0);

    // Output that keeps coming (`follow`) makes it, as a snapshot does.
    em.follow();
    assert!(em.has_parser());
    assert_eq!(em.position(), ring.head());
    let snap = em.snapshot();
    assert!(!snap.approximate, "everything was still retained");

    // Once allocated, catch-ups feed it.
    ring.append(b"more");
    em.catch_up();
    assert_eq!(em.position(), ring.head());
}

/// The readers tell the screen to catch up every quarter of the ring while output is not a
/// flood, so a program that redraws without ever pausing (no idle catch-up) never laps it.
#[test]
fn the_screen_follows_output_that_is_not_a_flood() {
    use std::time::{Duration, Instant};
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let ring = Ring::new(64 * 1024);
    let mut follow = Follow::new(&ring);
    ring.append(&[b'x'; 16 * 1024 - 1]);
    assert!(!follow.due_at(&ring, false, at(100)));
    ring.append(b"x");
    assert!(
        follow.due_at(&ring, false, at(100)),
        "a quarter of the ring came"
    );
    assert!(!follow.due_at(&ring, false, at(100)), "counted as told");
    ring.append(&[b'x'; 40 * 1024]);
    assert!(
        !follow.due_at(&ring, true, at(200)),
        "the reader says it is a flood"
    );
    ring.append(&[b'x'; 16 * 1024]);
    assert!(
        !follow.due_at(&ring, false, at(201)),
        "16 KiB in 1 ms: faster than FOLLOW_RATE"
    );
    ring.append(&[b'x'; 16 * 1024]);
    assert!(follow.due_at(&ring, false, at(300)));

    // A TUI's redraws, five rings' worth, with a catch-up whenever one is due: the screen is
    // exact at the end (alternate screen, mouse mode and the header drawn once included).
    let ring = Ring::new(64 * 1024);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    let mut follow = Follow::new(&ring);
    let mut all = b"\x1b[?1049h\x1b[?1000h\x1b[?2004h\x1b[1;1HSTATIC HEADER".to_vec();
    ring.append(&all);
    let mut i = 0;
    while ring.head() < 5 * 64 * 1024 {
        let frame = format!(
            "\x1b[10;5Hcounter {i:08}\x1b[11;5H\x1b[3{}mcolour\x1b[0m",
            i % 8
        );
        ring.append(frame.as_bytes());
        all.extend_from_slice(frame.as_bytes());
        // A frame every 10 ms.
        if follow.due_at(&ring, false, at(10 * (i + 1))) {
            em.follow();
        }
        i += 1;
    }
    let snap = em.snapshot();
    assert!(!snap.approximate);
    let shown = replay(&snap);
    assert_same_screen(
        reference(ROWS, COLS, &all).screen(),
        shown.screen(),
        "followed",
    );
    assert!(shown.screen().bracketed_paste());
    assert_ne!(
        shown.screen().mouse_protocol_mode(),
        vt100::MouseProtocolMode::None
    );
}

/// A flood that laps the emulator: it goes on with the state it had (the TUI's alternate
/// screen, mouse mode and static header), from an escape sequence rather than from the middle
/// of one (a fresh parser at the oldest byte showed `;5Hcounter` and a blank primary screen).
#[test]
fn a_lapped_emulator_keeps_its_state_and_goes_on_at_an_escape() {
    let ring = Ring::new(4096);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    let mut all = b"\x1b[?1049h\x1b[?1000h\x1b[1;1HSTATIC HEADER".to_vec();
    ring.append(&all);
    em.follow();
    for i in 0..2000 {
        // 17 bytes of text, then the sequences: a cut lands in the middle of one at times.
        let frame = format!(
            "\x1b[10;5Hcounter {i:08}\x1b[11;5H\x1b[3{}mcolour\x1b[0m",
            i % 8
        );
        ring.append(frame.as_bytes());
        all.extend_from_slice(frame.as_bytes());
    }
    assert!(ring.tail() > 0);
    let snap = em.snapshot();
    assert!(snap.approximate);
    let shown = replay(&snap);
    assert_same_screen(
        reference(ROWS, COLS, &all).screen(),
        shown.screen(),
        "lapped",
    );
    assert_ne!(
        shown.screen().mouse_protocol_mode(),
        vt100::MouseProtocolMode::None
    );
}

/// A title is kept up to 1024 printable bytes: a longer one is cut there, its control bytes
/// dropped, in the snapshot a late viewer gets.
#[test]
fn a_title_past_its_bound_is_cut() {
    let ring = Ring::new(1 << 20);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    let long = "t".repeat(3000);
    ring.append(format!("\x1b]2;{long}\x07shown").as_bytes());
    let snap = em.snapshot();
    let text = String::from_utf8_lossy(&snap.bytes).into_owned();
    let kept = format!("\x1b]2;{}\x07", "t".repeat(1024));
    assert!(text.contains(&kept), "the title, cut at 1024 bytes");
    assert!(
        !text.contains(&"t".repeat(1025)),
        "more than 1024 bytes of title kept"
    );
}

/// What vt100's own formatting leaves out: the scroll region and origin mode (kept by vt100),
/// autowrap off, insert mode and the title (followed beside it). A late viewer of a progress
/// bar under a scroll region must scroll only the region, as a viewer there from the start.
#[test]
fn snapshot_keeps_the_scroll_region_modes_and_title() {
    let ring = Ring::new(1 << 20);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    let program = b"\x1b]2;build: 3 of 9\x07\x1b[24;1H[#####     ] 50%\x1b[1;23r\x1b[5;1Hlog line";
    ring.append(program);
    let snap = em.snapshot();
    let text = String::from_utf8_lossy(&snap.bytes).into_owned();
    assert!(text.contains("\x1b[1;23r"), "{text:?}");
    assert!(text.contains("\x1b]2;build: 3 of 9\x07"), "{text:?}");
    // The same later output on a terminal that saw everything and on the late viewer's.
    let later: Vec<u8> = (0..40)
        .flat_map(|i| format!("\r\nlog line {i}").into_bytes())
        .collect();
    let mut live = reference(ROWS, COLS, program);
    live.process(&later);
    let mut late = replay(&snap);
    late.process(&later);
    assert_same_screen(live.screen(), late.screen(), "scroll region");
    assert!(late.screen().contents().ends_with("[#####     ] 50%"));

    // Origin mode: the region's top is row 1 of the program's cursor moves.
    let ring = Ring::new(1 << 20);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    let program = b"\x1b[5;20r\x1b[?6h\x1b[3;4Hinside";
    ring.append(program);
    let snap = em.snapshot();
    let mut live = reference(ROWS, COLS, program);
    let mut late = replay(&snap);
    assert_same_screen(live.screen(), late.screen(), "origin mode");
    live.process(b"\x1b[1;1Htop of the region\x1b[99;1Hbottom");
    late.process(b"\x1b[1;1Htop of the region\x1b[99;1Hbottom");
    assert_same_screen(live.screen(), late.screen(), "origin mode, moved");

    // Autowrap off and insert mode are not emulated here, but the viewer's terminal has them.
    let ring = Ring::new(1 << 20);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    ring.append(b"\x1b[?7l\x1b[4hx");
    let text = String::from_utf8_lossy(&em.snapshot().bytes).into_owned();
    assert!(text.ends_with("\x1b[?7l\x1b[4h"), "{text:?}");
    ring.append(b"\x1b[?7h\x1b[4l");
    let text = String::from_utf8_lossy(&em.snapshot().bytes).into_owned();
    assert!(
        !text.contains("\x1b[?7l") && !text.contains("\x1b[4h"),
        "{text:?}"
    );
}

#[test]
fn lazy_emulator_created_after_the_ring_wrapped_is_approximate() {
    let ring = Ring::new(4096);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    for i in 0..1000 {
        ring.append(counter_frame(i).as_bytes());
    }
    let snap = em.snapshot();
    assert!(snap.approximate);
    assert_eq!(snap.offset, ring.head());
}

/// A shell after a flood (`seq 1 200000`, then its prompt) is exact once a whole screen of
/// lines scrolled in after the cut, and the late viewer is not told otherwise; on the
/// alternate screen, under a scroll region set before the cut, or with too few lines it stays
/// approximate (the rows the lines did not reach may be stale).
#[test]
fn a_lapped_shell_is_exact_once_a_screen_of_lines_scrolled_in() {
    let flood = |before: &str, lines: usize, after: &str| {
        let ring = Ring::new(4096);
        let mut em = Emulator::new(ring.clone(), ROWS, COLS);
        let mut all = before.as_bytes().to_vec();
        ring.append(before.as_bytes());
        // A viewer there before the flood: the parser keeps what `before` set across the cut.
        em.snapshot();
        for i in 0..3000 {
            let line = format!("{i}\r\n");
            ring.append(line.as_bytes());
            all.extend_from_slice(line.as_bytes());
        }
        // Drawn in place, then `lines` lines, then what comes after.
        let tail: String = (0..lines).map(|i| format!("tail {i}\r\n")).collect();
        let tail = format!("{}{tail}{after}", counter_frame(1));
        ring.append(tail.as_bytes());
        all.extend_from_slice(tail.as_bytes());
        let snap = em.snapshot();
        assert!(ring.tail() > 0);
        (snap, all)
    };
    let prompt = "\x1b]0;me@box: ~\x07\x1b[?2004hme@box:~$ ";
    let rows = usize::from(ROWS);
    let (snap, all) = flood("", 2 * rows - 1, prompt);
    assert!(!snap.approximate);
    assert_same_screen(
        reference(ROWS, COLS, &all).screen(),
        replay(&snap).screen(),
        "a shell after a flood",
    );
    // One line too few: the counter's row may not have scrolled away.
    assert!(flood("", 2 * rows - 2, prompt).0.approximate);
    assert!(flood("\x1b[?1049h", 3 * rows, "").0.approximate);
    assert!(flood("\x1b[1;20r", 3 * rows, "").0.approximate);
}

#[test]
fn resize_changes_the_snapshot_size() {
    let ring = Ring::new(1 << 20);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    let bytes = drawing();
    ring.append(&bytes);
    em.snapshot();

    em.resize(30, 100);
    assert_eq!(em.size(), (30, 100));
    let later = b"\x1b[0m\x1b[28;90Hbottom right of the bigger screen";
    ring.append(later);
    let snap = em.snapshot();
    assert_eq!((snap.rows, snap.cols), (30, 100));

    let mut expected = reference(ROWS, COLS, &bytes);
    expected.set_size(
        NonZeroU16::new(30).expect("non-zero"),
        NonZeroU16::new(100).expect("non-zero"),
    );
    expected.process(later);
    assert_same_screen(expected.screen(), replay(&snap).screen(), "resized");

    // A zero size (PTY not sized yet) is clamped rather than rejected.
    em.resize(0, 0);
    let snap = em.snapshot();
    assert_eq!((snap.rows, snap.cols), (1, 1));
}

#[test]
fn resize_applies_at_its_place_in_the_stream() {
    // Without a parser the emulator is behind: a long line written at 80 columns must still wrap
    // at 80 even though the first snapshot comes after a resize to 120.
    let ring = Ring::new(1 << 20);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    let long: Vec<u8> = std::iter::repeat_n(b'a', 100).collect();
    ring.append(&long);
    em.resize(ROWS, 120);
    ring.append(b"\r\n");
    ring.append(&std::iter::repeat_n(b'b', 100).collect::<Vec<_>>());

    let mut expected = reference(ROWS, COLS, &long);
    expected.set_size(
        NonZeroU16::new(ROWS).expect("non-zero"),
        NonZeroU16::new(120).expect("non-zero"),
    );
    expected.process(b"\r\n");
    expected.process(&[b'b'; 100]);

    let snap = em.snapshot();
    assert_eq!(snap.cols, 120);
    assert_same_screen(expected.screen(), replay(&snap).screen(), "resize point");
}

#[test]
fn late_resize_at_applies_at_the_stamped_offset() {
    let ring = Ring::new(1 << 20);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    em.snapshot();
    let at = ring.head(); // the session resized the PTY here ...
    ring.append(&[b'c'; 100]);
    em.resize_at(at, ROWS, 120); // ... and the message arrives later
    let snap = em.snapshot();
    let mut expected = parser(ROWS, 120);
    expected.process(&[b'c'; 100]);
    assert_same_screen(expected.screen(), replay(&snap).screen(), "stamped resize");

    // Stamped behind what the emulator already fed: applies now instead of being lost.
    ring.append(b"\r\nmore");
    em.catch_up();
    em.resize_at(0, 10, 40);
    assert_eq!(em.size(), (10, 40));
    assert_eq!((em.snapshot().rows, em.snapshot().cols), (10, 40));
}

#[test]
fn big_backlog_is_fed_in_chunks() {
    // Many chunks' worth of retained output: the catch-up loops over bounded reads and ends
    // exactly at the head.
    let ring = Ring::new(4 * CHUNK);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    let mut expected = parser(ROWS, COLS);
    let mut i = 0;
    while ring.head() < 3 * CHUNK as u64 + 17 {
        let line = busy_line(i);
        ring.append(line.as_bytes());
        expected.process(line.as_bytes());
        i += 1;
    }
    let snap = em.snapshot();
    assert!(!snap.approximate);
    assert_eq!(snap.offset, ring.head());
    assert_same_screen(expected.screen(), replay(&snap).screen(), "backlog");
}

#[tokio::test]
async fn actor_serves_catch_up_resize_and_snapshots() {
    let ring = Ring::new(1 << 20);
    let (screen, handle) = Actor::spawn(
        None,
        Screen,
        ScreenArgs {
            ring: ring.clone(),
            rows: ROWS,
            cols: COLS,
        },
    )
    .await
    .expect("screen actor starts");

    let bytes = drawing();
    ring.append(&bytes);
    screen.cast(ScreenMsg::CatchUp).expect("actor alive");
    let snap = ractor::call_t!(screen, ScreenMsg::Snapshot, 5_000).expect("snapshot reply");
    assert_eq!(snap.offset, ring.head());
    assert!(!snap.approximate);
    assert_same_screen(
        reference(ROWS, COLS, &bytes).screen(),
        replay(&snap).screen(),
        "via the actor",
    );

    // A resize stamped by the sender with the ring head applies exactly there, even though the
    // actor handles it only after the new output was appended.
    screen
        .cast(ScreenMsg::ResizeAt {
            at: ring.head(),
            rows: 40,
            cols: 120,
        })
        .expect("actor alive");
    ring.append(b"\x1b[39;100Hfar corner");
    let snap = ractor::call_t!(screen, ScreenMsg::Snapshot, 5_000).expect("snapshot reply");
    assert_eq!((snap.rows, snap.cols), (40, 120));
    assert_eq!(
        replay(&snap)
            .screen()
            .cell(38, 99)
            .map(|c| c.contents().to_owned()),
        Some("f".to_owned()),
        "output after the resize is drawn at the new size"
    );

    // A plain resize takes the head when handled; handled before more output, it is exact too.
    screen
        .cast(ScreenMsg::Resize { rows: 20, cols: 60 })
        .expect("actor alive");
    let snap = ractor::call_t!(screen, ScreenMsg::Snapshot, 5_000).expect("snapshot reply");
    assert_eq!((snap.rows, snap.cols), (20, 60));

    screen.stop(None);
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("actor stops in time")
        .expect("actor task did not panic");
}

/// A viewer the output lapped gets the screen drawn over what it shows (`over_scrollback`): the
/// session's screen exactly, as a fresh terminal would (alternate screen and colours included,
/// mouse reporting it had left on turned off), with what it showed before — and the note —
/// kept in its scrollback (the full reset a fresh terminal gets wiped that in xterm.js).
#[test]
fn a_redraw_over_scrollback_shows_the_screen_and_keeps_the_history() {
    let ring = Ring::new(1 << 20);
    let mut em = Emulator::new(ring.clone(), ROWS, COLS);
    let now = b"\x1b[?1049h\x1b[41mnow\x1b[5;5H\x1b[1mbold";
    ring.append(now);
    let snap = em.snapshot();
    // The viewer saw older output, and a program that had turned mouse reporting on.
    let mut viewer = vt100::Parser::new(
        NonZeroU16::new(ROWS).unwrap(),
        NonZeroU16::new(COLS).unwrap(),
        500,
    );
    viewer.process(b"old line 1\r\nold line 2\r\n\x1b[?1000h\x1b[2;10r");
    viewer.process(&snap.over_scrollback("[corral: skipped]"));
    assert_same_screen(
        reference(ROWS, COLS, now).screen(),
        viewer.screen(),
        "redrawn over scrollback",
    );
    assert_eq!(
        viewer.screen().mouse_protocol_mode(),
        vt100::MouseProtocolMode::None
    );
    // The history is the normal screen's (the alternate one has none): back on it, scrolled up.
    viewer.process(b"\x1b[?1049l");
    viewer.screen_mut().set_scrollback(500);
    // All of it, a screenful at a time from the oldest row.
    let mut back = String::new();
    let mut offset = viewer.screen().scrollback();
    loop {
        viewer.screen_mut().set_scrollback(offset);
        back.push_str(&viewer.screen().contents());
        back.push('\n');
        if offset == 0 {
            break;
        }
        offset = offset.saturating_sub(usize::from(ROWS));
    }
    // Every line it had received, in order, then the note under them: the note overwrote the
    // second row (resetting the scroll region homes the cursor), 38 lines above the real gap.
    let at = |s: &str| back.find(s).unwrap_or_else(|| panic!("{s:?} in {back}"));
    assert!(at("old line 1") < at("old line 2"), "{back}");
    assert!(at("old line 2") < at("[corral: skipped]"), "{back}");
}

/// A 24×80 screen that showed `bytes` and was then made `rows` tall (applied by a snapshot, as
/// a viewer's would be): the screen, its Ring, and what that snapshot shows.
fn grown(bytes: &str, rows: u16) -> (Emulator, Ring, vt100::Parser) {
    let ring = Ring::new(1 << 16);
    let mut screen = Emulator::new(ring.clone(), 24, 80);
    ring.append(bytes.as_bytes());
    screen.catch_up();
    screen.resize_at(ring.head(), rows, 80);
    let plain = replay(&screen.snapshot());
    (screen, ring, plain)
}

/// A screen made taller shows the rows that scrolled off last at its top again, as xterm,
/// xterm.js and tmux do: the emulator (no scrollback: vt100 puts blank rows there) gets them
/// from a replay of the output that keeps scrollback (`Source::pulled_rows`), whose history leaves
/// them out. A 40-row page opened on a 24-row session showed 16 blank rows, then the last 23
/// lines. A replay that is not this screen (it started too late) fills nothing.
#[test]
fn a_taller_screen_shows_the_rows_that_scrolled_off_last() {
    let bytes: String = (1..=40).map(|i| format!("line {i}\r\n")).collect();
    let (screen, _, plain) = grown(&bytes, 40);
    assert_eq!(plain.screen().rows(0, 80).next().as_deref(), Some(""));
    let source = screen.history_source();
    assert_eq!(source.pulled_rows(), Some(40));
    let (history, replayed) = corral_actors::history::replay(&source, 40);
    assert_eq!(history.rows, 1, "{history:?}");
    let snap = screen
        .render_over_pulled(&replayed)
        .expect("the blank rows filled");
    assert_eq!((snap.rows, snap.cols), (40, 80));
    let viewer = replay(&snap);
    let rows: Vec<String> = viewer.screen().rows(0, 80).collect();
    assert_eq!(rows[0], "line 2", "{rows:?}");
    assert_eq!(rows[38], "line 40", "{rows:?}");
    assert_eq!(
        viewer.screen().cursor_position(),
        plain.screen().cursor_position()
    );
    // The rows below as they were.
    let before: Vec<String> = plain.screen().rows(0, 80).collect();
    assert_eq!(rows[16..], before[16..]);
    // A replay of other output is not this screen.
    let other = corral_actors::history::replay(
        &corral_actors::history::Source {
            start: 0,
            bytes: b"something else\r\n".to_vec(),
            sizes: source.sizes.clone(),
        },
        40,
    )
    .1;
    assert!(screen.render_over_pulled(&other).is_none());
}

/// The rows a taller screen takes back may hold blank lines (an agent's answer has them
/// between its paragraphs): they are filled all the same.
#[test]
fn a_taller_screen_takes_back_blank_lines_too() {
    let bytes: String = (1..=30).map(|i| format!("para {i}\r\n\r\n")).collect();
    let (screen, _, plain) = grown(&bytes, 40);
    let source = screen.history_source();
    let (_, replayed) = corral_actors::history::replay(&source, 40);
    let snap = screen
        .render_over_pulled(&replayed)
        .expect("the blank rows filled");
    let viewer = replay(&snap);
    let rows: Vec<String> = viewer.screen().rows(0, 80).collect();
    let want: Vec<String> = replayed.rows(0, 80).collect();
    assert_eq!(rows, want);
    assert_eq!(
        viewer.screen().cursor_position(),
        plain.screen().cursor_position()
    );
}

/// A screen made much taller — a 24-row session shown on a 120-row terminal — takes back all
/// the rows it gained: the replay keeps as many as its tallest size (a fixed 64 left the top
/// 32 blank).
#[test]
fn a_screen_made_five_times_taller_takes_back_every_row() {
    let bytes: String = (1..=200).map(|i| format!("line {i}\r\n")).collect();
    let (screen, _, plain) = grown(&bytes, 120);
    assert_eq!(plain.screen().rows(0, 80).next().as_deref(), Some(""));
    let source = screen.history_source();
    let pulled = source.pulled_rows().expect("it grew");
    let (history, replayed) = corral_actors::history::replay(&source, pulled);
    let snap = screen
        .render_over_pulled(&replayed)
        .expect("the blank rows filled");
    let rows: Vec<String> = replay(&snap).screen().rows(0, 80).collect();
    assert_eq!(rows[0], "line 82", "{rows:?}");
    assert_eq!(rows[118], "line 200", "{rows:?}");
    assert_eq!(history.rows, 81, "{history:?}");
}

/// A program that redraws its whole screen once it is made taller (a TUI's answer to SIGWINCH)
/// leaves nothing to fill: the replay's screen is the session's (`shows`), and its history is
/// taken as it is. Before the redraw, the blank rows make them differ, and are filled.
#[test]
fn a_screen_redrawn_after_it_grew_is_the_replays() {
    let bytes: String = (1..=40).map(|i| format!("line {i}\r\n")).collect();
    let (mut screen, ring, _) = grown(&bytes, 40);
    let (_, replayed) = corral_actors::history::replay(&screen.history_source(), 40);
    assert!(!screen.shows(&replayed), "blank rows at its top");
    assert!(screen.render_over_pulled(&replayed).is_some());
    // The program's redraw at the new size: clear, then its rows from the top.
    ring.append(b"\x1b[H\x1b[2Jredrawn at 40 rows\r\n");
    screen.catch_up();
    screen.snapshot();
    let (_, replayed) = corral_actors::history::replay(&screen.history_source(), 40);
    assert!(screen.shows(&replayed));
    assert!(screen.render_over_pulled(&replayed).is_none());
}

/// Output after a screen was made taller scrolls the rows it took back off again, as in any
/// terminal: a late viewer's history runs on without a gap (it had as many blank lines as the
/// screen gained, where the rows taken back were).
#[tokio::test]
async fn output_after_a_screen_grew_leaves_no_gap_in_the_history() {
    let ring = Ring::new(1 << 20);
    let (screen, handle) = Actor::spawn(
        None,
        Screen,
        ScreenArgs {
            ring: ring.clone(),
            rows: 24,
            cols: 80,
        },
    )
    .await
    .expect("screen actor starts");
    let first: String = (1..=40).map(|i| format!("line {i}\r\n")).collect();
    ring.append(first.as_bytes());
    screen
        .cast(ScreenMsg::ResizeAt {
            at: ring.head(),
            rows: 40,
            cols: 80,
        })
        .expect("actor alive");
    let more: String = (41..=100).map(|i| format!("line {i}\r\n")).collect();
    ring.append(more.as_bytes());
    let snap = ractor::call_t!(screen, |r| ScreenMsg::SnapshotWithHistory(r, None), 5_000)
        .expect("snapshot reply");
    // Into a terminal of the same size with a scrollback: what it holds, top to bottom.
    let nz = |n| NonZeroU16::new(n).expect("not zero");
    let mut viewer = vt100::Parser::new(nz(40), nz(80), 1000);
    viewer.process(&snap.bytes);
    viewer.screen_mut().set_scrollback(1000);
    let back = viewer.screen().scrollback();
    let mut lines = Vec::new();
    for top in (1..=back).rev() {
        viewer.screen_mut().set_scrollback(top);
        lines.extend(viewer.screen().rows(0, 80).next());
    }
    viewer.screen_mut().set_scrollback(0);
    lines.extend(viewer.screen().rows(0, 80));
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let want: Vec<String> = (1..=100).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, want);
    screen.stop(None);
    handle.await.expect("screen actor ends");
}
