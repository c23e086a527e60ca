"""Reconnection with exact resume: while a session prints `line 1` … `line 3000` (one every
~millisecond), its WebSocket is dropped from the server side (`ss -K` destroys the server's end
of the TCP connection; where the kernel refuses that, the page goes through a TCP proxy whose
connections are cut instead). The page must show "reconnecting", reconnect by itself, and end
up with exactly the session's log on screen: every line once, no gap, no duplicate, no lag
notice. CORRAL_BROWSER_DROP=proxy forces the proxy."""

import os
import time

from playwright.sync_api import expect

from corral_web import CutProxy, render_log, ss_can_destroy, ss_drop_server_side, term_lines, wait_js, wait_until

N = 3000
PROG = f"read go; for i in $(seq 1 {N}); do echo line $i; sleep 0.001; done; exec cat"


def test_server_side_drop_mid_output_resumes_exactly(server, page):
    use_ss = os.environ.get("CORRAL_BROWSER_DROP") != "proxy" and ss_can_destroy(server.port)
    proxy = None if use_ss else CutProxy(server.port)
    try:
        base = server.url if use_ss else f"http://127.0.0.1:{proxy.port}"
        s = server.spawn(["sh", "-c", PROG], name="lines")
        page.goto(f"{base}/?token={server.token}#/s/{s['id']}")
        expect(page.get_by_test_id("terminal")).to_be_visible()
        wait_js(page, "window.corral.sessionId() !== null && window.corral.connState() === 'connected'", 15)
        expect(page.get_by_test_id("conn-state")).to_have_text("connected")
        page.get_by_test_id("terminal").click()
        page.keyboard.type("go")
        page.keyboard.press("Enter")  # the program starts printing

        wait_js(page, "window.corral.termText().includes('line 400')", 20, "output to be under way")
        received = page.evaluate("window.corral.receivedOffset()")
        if use_ss:
            killed = ss_drop_server_side(server.port)
            assert killed, "ss -K destroyed no connection"
        else:
            assert proxy.cut() >= 1, "the proxy had no connection to cut"
        dropped_at = time.monotonic()
        head_at_drop = server.session(s["id"])["output_offset"]

        wait_js(page, "window.__connStates.includes('reconnecting')", 10, "conn-state to show reconnecting")
        wait_js(page, "window.corral.connState() === 'connected'", 20, "the page to reconnect")
        reconnected_after = time.monotonic() - dropped_at
        expect(page.get_by_test_id("conn-state")).to_have_text("connected")

        # The program is done once cat waits for input; then the page must catch up.
        final = server.wait_output("lines", f"line {N}\r\n".encode(), 60)
        end = len(final)
        wait_js(page, f"window.corral.receivedOffset() >= {end}", 30, "the page to receive everything")
        page.evaluate("window.corral.flushed()")
        wait_js(page, f"window.corral.nextOffset() >= {end}", 10, "xterm to parse everything")

        log = server.logs("lines")
        assert len(log) == end == server.session(s["id"])["output_offset"], (len(log), end)
        # The drop really landed mid-output.
        assert received < head_at_drop < end, (received, head_at_drop, end)

        shown = term_lines(page)
        expected = render_log(log)
        assert expected[0] == "go" and expected[-1] == f"line {N}", expected[:2] + expected[-2:]
        numbered = [l for l in shown if l.startswith("line ")]
        want = [f"line {i}" for i in range(1, N + 1)]
        if numbered != want:
            got = [int(l.split()[1]) for l in numbered]
            dups = sorted({i for i in got if got.count(i) > 1})[:10]
            missing = sorted(set(range(1, N + 1)) - set(got))[:10]
            raise AssertionError(f"lines differ from the log: {len(got)} lines, duplicates {dups}, missing {missing}")
        assert shown == expected, "terminal text differs from the rendered log"
        assert page.evaluate("window.corral.lags()") == []
        states = page.evaluate("window.__connStates")
        assert states[-1] == "connected" and "reconnecting" in states, states
        print(
            f"drop via {'ss -K' if use_ss else 'proxy cut'}: page had {received} B, head {head_at_drop} B of {end} B;"
            f" reconnected in {reconnected_after:.2f}s; states {states}"
        )
    finally:
        if proxy:
            proxy.close()


def test_keys_typed_while_offline_are_sent_when_the_connection_is_back(server, page):
    # A phone in a tunnel: the device goes offline (the page must stop saying "connected" at
    # once, not 25-35 s later at its next ping), the user types, the network comes back: what
    # was typed reaches the program, in order, once (keys typed while reconnecting were lost
    # without a word).
    s = server.spawn(["cat"], name="tunnel")
    page.goto(f"{server.url}/?token={server.token}#/s/{s['id']}")
    wait_js(page, "window.corral.sessionId() !== null && window.corral.connState() === 'connected'", 15)
    page.get_by_test_id("terminal").click()
    page.keyboard.type("before")
    page.keyboard.press("Enter")
    server.wait_output("tunnel", b"before\r\nbefore\r\n", 10)
    page.context.set_offline(True)
    wait_js(page, "window.corral.connState() === 'reconnecting'", 5, "the page to see it is offline")
    page.keyboard.type("in the tunnel")
    page.keyboard.press("Enter")
    expect(page.get_by_text("sent when the connection is back")).to_be_visible()
    time.sleep(1)
    assert b"tunnel\r" not in server.logs("tunnel")
    page.context.set_offline(False)
    wait_js(page, "window.corral.connState() === 'connected'", 20, "the page to reconnect")
    out = server.wait_output("tunnel", b"in the tunnel\r\nin the tunnel\r\n", 10)
    assert out.count(b"in the tunnel") == 2, out


def test_a_restart_while_offline_is_drawn_where_it_happened(server, page):
    # The page resumes the output at its next byte and the events after the last it saw: a
    # process that ended and one that started while the page was offline are drawn in the
    # terminal between their outputs, as a page that stayed connected draws them (the line
    # "process ended" was missing: events that came while away were not replayed).
    s = server.spawn(["sh", "-c", "echo run; exec cat"], name="restarted-away")
    page.goto(f"{server.url}/?token={server.token}#/s/{s['id']}")
    wait_js(page, "window.corral.sessionId() !== null && window.corral.connState() === 'connected'", 15)
    wait_js(page, "window.corral.termText().includes('run')", 10, "the first run's output")
    page.context.set_offline(True)
    wait_js(page, "window.corral.connState() === 'reconnecting'", 5, "the page to see it is offline")
    server.api("POST", f"/v1/sessions/{s['id']}/restart")
    server.wait_output("restarted-away", b"run\r\n", 10)
    wait_until(lambda: server.logs("restarted-away").count(b"run\r\n") == 2, 10, "the second run's output")
    page.context.set_offline(False)
    wait_js(page, "window.corral.connState() === 'connected'", 20, "the page to reconnect")
    wait_js(page, "window.corral.termText().split('run').length === 3", 10, "the second run on screen")
    lines = [l for l in term_lines(page) if l.strip()]
    assert lines[0] == "run" and lines[-1] == "run", lines
    ended = [l for l in lines if "process ended" in l]
    assert len(ended) == 1, lines
    assert lines.index(ended[0]) == 1, lines
