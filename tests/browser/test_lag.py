"""A view the output lapped: a page that could not keep up with a flood (its main thread held
by the DevTools debugger while a program prints 11 MB) is told bytes were skipped and redraws
the session's screen, keeping what it had received in its scrollback with the notice "output
skipped … the screen is redrawn" under it. The notice sits where the gap is: right below the
last line received, which is intact, as are the lines above it (it was written over a line near
the top of the screen, 38 lines above the real gap: resetting the scroll region homed the
cursor). The skip named runs up to the screen redrawn: all the view misses. A view lapped
again and again says it in one toast, counted, never a stack of them over the header."""

import time

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
    # The skip said is all this view misses: up to the screen redrawn (the flood's end), not
    # only up to where the server first said it was lapped (a tenth of what was lost).
    assert lags[-1][1] == server.session(s["id"])["output_offset"], lags
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


def test_a_view_lapped_again_and_again_says_it_in_one_toast(server, new_page):
    # `yes` on a phone that keeps falling behind: a toast per redraw ("output skipped", "this
    # screen may be incomplete") stacked up by the dozen over the header and its stop and kill.
    # A toast said again is the one on screen, counted, and at most 3 are up at once.
    s = server.spawn(["sh", "-c", "sleep 1; exec yes phone-yes"], name="yes")
    page = new_page(phone=True)
    page.goto(server.login_url(hash=f"/s/{s['id']}"))
    wait_js(page, "window.corral.connState() === 'connected' && window.corral.sessionId() !== null", 15)
    cdp = page.context.new_cdp_session(page)
    most = 0
    for _ in range(6):
        # Held a moment, the page is lapped by the time it runs again.
        cdp.send("Debugger.enable")
        cdp.send("Debugger.pause")
        time.sleep(0.3)
        try:
            cdp.send("Debugger.resume")
        except Exception:  # no script ran meanwhile: it never paused
            pass
        cdp.send("Debugger.disable")
        for _ in range(4):
            most = max(most, page.get_by_test_id("toast").count())
            page.wait_for_timeout(100)
    texts = page.get_by_test_id("toast").all_text_contents()
    server.api("POST", f"/v1/sessions/{s['id']}/kill")
    assert len(page.evaluate("window.corral.lags()")) >= 2, "the page was not lapped again and again"
    assert most <= 3, texts
    assert len([t for t in texts if t.startswith("output skipped")]) == 1, texts
    # Not over the header's buttons.
    stop = page.get_by_test_id("btn-stop").bounding_box()
    for t in page.get_by_test_id("toast").all():
        box = t.bounding_box()
        assert box["y"] >= stop["y"] + stop["height"], (box, stop)
