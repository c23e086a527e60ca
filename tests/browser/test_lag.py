"""A view the output lapped: a page that could not keep up with a flood (its main thread held
by the DevTools debugger while a program prints 11 MB) is told bytes were skipped and redraws
the session's screen, keeping what it had received in its scrollback with the notice "output
skipped … the screen is redrawn" under it. The notice sits where the gap is: right below the
last line received, which is intact, as are the lines above it (it was written over a line near
the top of the screen, 38 lines above the real gap: resetting the scroll region homed the
cursor)."""

from corral_web import term_lines, wait_js, wait_until

LINES = 150_000
FLOOD = f'import sys\nfor i in range({LINES}): sys.stdout.write("big %06d " % i + "z" * 60 + "\\n")'


def test_the_skip_notice_goes_below_the_last_line_received(server, page, tmp_path):
    go = tmp_path / "go"
    prog = f"echo ready; while [ ! -e {go} ]; do sleep 0.05; done; python3 -c '{FLOOD}'; exec cat"
    s = server.spawn(["sh", "-c", prog], name="flood")
    page.goto(server.login_url(hash=f"/s/{s['id']}"))
    wait_js(page, "window.corral.termText().includes('ready') && window.corral.connState() === 'connected'", 15)
    # The page stops at the next thing it runs (the first output frame): it reads and acks
    # nothing until the flood is over, far past what the server holds for it.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Debugger.enable")
    cdp.send("Debugger.pause")
    go.touch()
    try:
        wait_until(lambda: server.session(s["id"])["output_offset"] > 73 * LINES, 60, "the flood to end")
    finally:
        cdp.send("Debugger.resume")
        cdp.send("Debugger.disable")
    last = f"big {LINES - 1:06d} "
    wait_js(page, f"window.corral.termText().includes({last!r})", 60, "the redrawn screen")
    lags = page.evaluate("window.corral.lags()")
    assert lags, "the page was not lapped"
    log = server.logs("flood")
    assert len(log) == server.session(s["id"])["output_offset"], "the log is not the whole output"
    lines = term_lines(page)
    for frm, to in lags:
        notes = [i for i, l in enumerate(lines) if f"output skipped: bytes {frm}..{to}" in l]
        assert len(notes) == 1, (frm, to, [l for l in lines if "skipped" in l])
        at = notes[0]
        # What was received last, line by line (the last one cut where the gap starts; an
        # empty one when the gap starts a line: the row the cursor was on), as the page shows
        # lines (trailing spaces trimmed).
        received = [l.rstrip(" ") for l in log[:frm].decode().split("\r\n")[-20:]]
        assert lines[at - len(received) : at] == received, (frm, lines[at - 25 : at + 2], received[-3:])
