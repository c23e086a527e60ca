"""Terminal view: a session's screen shows and typed input comes back (through `cat`, and the
log agrees); the session's size (GET /v1/sessions/{id} -> size, and what the process itself
sees with `stty size`) follows the browser viewport and the terminal fills its box; a read-only
link shows the read-only badge and no key bar, and key presses in it never reach the process
(output and log unchanged), nor does input or a resize sent by hand on a read token's socket.
An ended session says how it ended, keys typed into a stopped one are said not to reach it, and
a restart leaves no old window title in the tab's."""

import re
import time

from playwright.sync_api import expect

from corral_web import PrefixProxy, term_lines, wait_js, wait_until

READY_CAT = ["sh", "-c", "echo ready; exec cat"]


def open_term(server, page, sid, token=None, needle="ready"):
    page.goto(server.login_url(token=token, hash=f"/s/{sid}"))
    expect(page.get_by_test_id("terminal")).to_be_visible()
    wait_js(page, f"window.corral.termText().includes({needle!r})", 15, f"{needle!r} on the screen")
    expect(page.get_by_test_id("conn-state")).to_have_text("connected")


def test_type_into_cat_and_see_it_back(server, page):
    s = server.spawn(READY_CAT, name="echo-cat")
    open_term(server, page, s["id"])
    assert page.evaluate("window.corral.sessionId()") == s["id"]
    expect(page.get_by_test_id("term-name")).to_have_text("echo-cat")
    expect(page.get_by_test_id("keybar")).to_be_visible()
    page.get_by_test_id("terminal").click()
    page.keyboard.type("hello from chromium")
    page.keyboard.press("Enter")
    # The tty echoes the line, then cat prints it.
    wait_js(page, "window.corral.termText().split('hello from chromium').length === 3", 10, "echo and cat's copy")
    assert term_lines(page) == ["ready", "hello from chromium", "hello from chromium"]
    assert server.wait_output("echo-cat", b"hello from chromium\r\nhello from chromium\r\n")
    # A key of the key bar goes through too: ^C ends cat.
    page.get_by_test_id("key-ctrl-c").click()
    wait_until(lambda: server.session(s["id"])["state"] != "running", 10, "cat to end after ^C")


def open_with_subscribes_held(server, page, s, hold) -> list:
    """Opens session `s`'s view with its `subscribe` requests held while `hold["on"]` (kept as
    (socket, message) in the list returned, to send later); the rest goes through, and the
    server's messages come back as they are. Returns once one is held, the socket up."""
    held: list = []

    def route(ws):
        up = ws.connect_to_server()
        ws.on_message(lambda m: held.append((up, m)) if hold["on"] and '"subscribe"' in str(m) else up.send(m))

    page.route_web_socket(re.compile(r"/v1/ws"), route)
    page.goto(server.login_url(hash=f"/s/{s['id']}"))
    # Polled through Playwright: its handlers run only while the test waits in it.
    for _ in range(150):
        if held:
            break
        page.wait_for_timeout(100)
    assert held, "no subscribe"
    expect(page.get_by_test_id("conn-state")).to_have_text("connected")
    return held


def test_keys_typed_while_the_view_attaches_are_kept_without_a_word(server, page):
    """The socket up and the view only attaching (its subscribe on its way, as when it redraws
    after a lag): keys typed are sent once it is attached, and nothing says the connection is
    down (the page said "not connected: what you type is sent when the connection is back")."""
    s = server.spawn(READY_CAT, name="attach-cat")
    hold = {"on": True}
    held = open_with_subscribes_held(server, page, s, hold)
    page.get_by_test_id("terminal").click()
    page.keyboard.type("typed early\n")
    page.wait_for_timeout(500)
    assert page.get_by_test_id("toast").filter(has_text="not connected").count() == 0
    hold["on"] = False
    for up, m in held:
        up.send(m)
    for _ in range(150):
        if b"typed early\r\ntyped early\r\n" in server.logs("attach-cat"):
            break
        page.wait_for_timeout(100)
    assert server.logs("attach-cat") == b"ready\r\ntyped early\r\ntyped early\r\n"


def screen_fit(page):
    return page.evaluate(
        """() => {
            const box = document.querySelector('[data-testid="terminal"]');
            const screen = box.querySelector('.xterm-screen');
            return { box: box.clientWidth, boxH: box.clientHeight, screen: screen.offsetWidth, screenH: screen.offsetHeight };
        }"""
    )


def test_resize_follows_viewport(server, page):
    prog = "trap 'stty size' WINCH; echo ready; while :; do sleep 0.05; done"
    s = server.spawn(["sh", "-c", prog], name="resize-me")
    assert s["size"] == {"rows": 24, "cols": 80}, s["size"]
    sizes = []
    for vw, vh in ((1280, 800), (760, 480), (1100, 700)):
        if not sizes:
            open_term(server, page, s["id"])
        else:
            page.set_viewport_size({"width": vw, "height": vh})
        prev = sizes[-1] if sizes else s["size"]
        size = wait_until(
            lambda: (lambda z: z if z != prev else None)(server.session(s["id"])["size"]),
            10,
            f"the size to change from {prev} at {vw}x{vh}",
        )
        # Let the debounced resizes settle, then the size must be stable.
        time.sleep(0.6)
        size = server.session(s["id"])["size"]
        rows, cols = size["rows"], size["cols"]
        # The process itself sees it (its WINCH trap prints `stty size`).
        wait_js(page, f"window.corral.termText().includes('{rows} {cols}')", 10, f"stty size {rows} {cols}")
        fit = screen_fit(page)
        cell_w = fit["screen"] / cols
        cell_h = fit["screenH"] / rows
        # The terminal fills its box: less than one cell (plus a scrollbar) left over.
        assert fit["screen"] <= fit["box"] and fit["box"] - fit["screen"] < cell_w + 20, (fit, size)
        assert fit["screenH"] <= fit["boxH"] and fit["boxH"] - fit["screenH"] < cell_h + 1, (fit, size)
        sizes.append(size)
    assert sizes[1]["cols"] < sizes[0]["cols"] and sizes[1]["rows"] < sizes[0]["rows"], sizes
    assert sizes[2]["cols"] > sizes[1]["cols"] and sizes[2]["rows"] > sizes[1]["rows"], sizes
    assert page.evaluate("document.documentElement.scrollWidth") <= 1100


def test_read_only_link_cannot_type(server, page):
    s = server.spawn(READY_CAT, name="ro-cat")
    read = server.scoped_token(s["id"], "read")
    open_term(server, page, s["id"], token=read)
    expect(page.get_by_test_id("read-only")).to_be_visible()
    expect(page.get_by_test_id("read-only")).to_have_text("read-only")
    expect(page.get_by_test_id("scope")).to_contain_text("read")
    expect(page.get_by_test_id("keybar")).to_have_count(0)
    expect(page.get_by_test_id("btn-kill")).to_have_count(0)
    before = server.session(s["id"])
    log_before = server.logs("ro-cat")
    assert log_before == b"ready\r\n", log_before

    page.get_by_test_id("terminal").click()
    page.keyboard.type("typed by a reader")
    page.keyboard.press("Enter")
    page.keyboard.press("Control+C")
    page.keyboard.insert_text("pasted by a reader\n")

    # A hand-made socket with the same cookie: the server refuses input and resize.
    replies = page.evaluate(
        """async (sid) => {
            const ws = new WebSocket(`ws://${location.host}/v1/ws`, ['corral.v1']);
            ws.binaryType = 'arraybuffer';
            const got = {};
            ws.onmessage = (e) => { if (typeof e.data === 'string') { const m = JSON.parse(e.data); if (m.id) got[m.id] = m; } };
            await new Promise((res, rej) => { ws.onopen = res; ws.onerror = () => rej(new Error('ws refused')); });
            const send = (o) => ws.send(JSON.stringify(o));
            const reply = async (id) => { for (let i = 0; i < 200 && !got[id]; i++) await new Promise(r => setTimeout(r, 10)); return got[id] || null; };
            send({ type: 'hello', id: 1, protocol: 1 });
            await reply(1);
            send({ type: 'subscribe', id: 2, session: sid });
            const sub = await reply(2);
            const frame = new Uint8Array(13 + 14);
            frame[0] = 3;
            new DataView(frame.buffer).setUint32(1, sub.channel);
            frame.set(new TextEncoder().encode('binary input\\n'), 13);
            ws.send(frame);
            send({ type: 'input', id: 3, session: sid, data: 'json input\\n' });
            send({ type: 'resize', id: 4, session: sid, rows: 7, cols: 33 });
            send({ type: 'ping', id: 5 });
            const r = { sub, input: await reply(3), resize: await reply(4), pong: await reply(5) };
            ws.close();
            return r;
        }""",
        s["id"],
    )
    assert replies["sub"]["type"] == "subscribed", replies
    assert replies["input"] and replies["input"]["type"] == "error" and replies["input"]["code"] == "forbidden", replies
    assert replies["resize"] and replies["resize"]["type"] == "error" and replies["resize"]["code"] == "forbidden", replies
    assert replies["pong"]["type"] == "pong", replies

    time.sleep(1.0)  # give any stray input time to be echoed
    after = server.session(s["id"])
    assert after["output_offset"] == before["output_offset"], (before["output_offset"], after["output_offset"])
    assert after["state"] == "running" and after["pid"] == before["pid"], after
    assert after["size"] == before["size"], (before["size"], after["size"])
    assert server.logs("ro-cat") == log_before
    assert term_lines(page) == ["ready"], term_lines(page)


def test_keys_kept_while_attaching_are_said_once_when_the_socket_drops(server, page):
    """Keys kept unsaid while the view attaches, then the socket drops: that they wait for the
    connection is said then, once, however many keys follow (the first key kept had been the
    only one that could say it, so nothing ever did)."""
    s = server.spawn(READY_CAT, name="drop-cat")
    # Every subscribe is held: the view stays attaching, its socket up.
    open_with_subscribes_held(server, page, s, {"on": True})
    page.get_by_test_id("terminal").click()
    page.keyboard.type("early")
    page.wait_for_timeout(300)
    said = page.get_by_test_id("toast").filter(has_text="not connected")
    assert said.count() == 0
    page.context.set_offline(True)
    expect(page.get_by_test_id("conn-state")).not_to_have_text("connected")
    expect(said).to_have_count(1)
    page.keyboard.type(" and more keys")
    page.wait_for_timeout(300)
    expect(said).to_have_count(1)
    assert "×" not in said.text_content(), said.text_content()
    page.context.set_offline(False)


def test_pipe_session_gets_lines_and_a_stopped_one_says_so(server, page):
    """A session on pipes has no line discipline: the page echoes and edits the line itself
    and sends it on Enter with a newline (Enter used to arrive as a bare CR, so a program
    reading lines never got one, and nothing typed showed). Typing into a stopped session
    says so instead of vanishing."""
    prog = "echo ready; while IFS= read -r l; do echo \"got:$l\"; done"
    s = server.spawn(["sh", "-c", prog], name="piped", mode="pipe")
    open_term(server, page, s["id"])
    page.get_by_test_id("terminal").click()
    # A wide character is erased over its two cells: the line starts where it did.
    page.keyboard.type("漢")
    page.keyboard.press("Backspace")
    page.keyboard.type("helo")
    page.keyboard.press("Backspace")
    page.keyboard.type("lo world")
    wait_js(page, "window.corral.termText().includes('hello world')", 10, "the typed line echoed")
    assert "hello world" in term_lines(page), term_lines(page)
    page.keyboard.press("Enter")
    assert server.wait_output("piped", b"got:hello world\n")
    wait_js(page, "window.corral.termText().includes('got:hello world')", 10, "the program's answer")
    server.api("POST", f"/v1/sessions/{s['id']}/stop", {})
    wait_until(lambda: server.session(s["id"])["state"] == "stopped", 10, "stopped")
    wait_js(page, "document.body.innerText.includes('stopped')", 10, "the page knows")
    # Nothing runs to stop or kill any more.
    expect(page.get_by_test_id("btn-stop")).to_be_disabled()
    expect(page.get_by_test_id("btn-kill")).to_be_disabled()
    expect(page.get_by_test_id("btn-restart")).to_be_enabled()
    page.keyboard.type("x")
    expect(page.get_by_text(re.compile("nothing was typed"))).to_be_visible()


def test_a_session_opened_after_it_ended_says_how_it_ended(server, page):
    """A view opened after the session's process ended shows how it ended under its output, as
    a view that watched it end does (`— process ended: exit 3 —`): the page draws that line on
    the `exited` event, which a later subscription never gets. On a PTY (the screen) and on
    pipes (the output)."""
    for mode in ("pty", "pipe"):
        name = f"ended-{mode}"
        s = server.spawn(["sh", "-c", "echo starting; echo 'error: boom'; exit 3"], name=name, mode=mode)
        wait_until(lambda: server.session(s["id"])["state"] in ("stopped", "failed"), 10, f"{name} to end")
        page.goto(server.login_url(hash=f"/s/{s['id']}"))
        wait_js(page, f"window.corral.sessionId() === {s['id']!r}", 15)
        wait_js(page, "window.corral.termText().includes('process ended')", 10, f"the end of {name}")
        assert term_lines(page) == ["starting", "error: boom", "— process ended: exit 3 —"], term_lines(page)


def test_keys_typed_after_stopping_from_the_page_are_said_not_to_reach_it(server, page):
    """Stopped with the page's stop button, a session takes no keys, and keys typed next are
    said not to have been typed: the terminal has the keys again once the dialog closes (they
    went to the disabled stop button: nowhere, without a word)."""
    s = server.spawn(READY_CAT, name="stopped-cat")
    open_term(server, page, s["id"])
    page.get_by_test_id("terminal").click()
    page.keyboard.type("hello cat\n")
    server.wait_output("stopped-cat", b"hello cat\r\nhello cat\r\n")
    page.get_by_test_id("btn-stop").click()
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("term-state")).to_have_text("stopped")
    expect(page.get_by_test_id("btn-stop")).to_be_disabled()
    log = server.logs("stopped-cat")
    page.keyboard.type("typing into stopped")
    said = page.get_by_test_id("toast").filter(has_text="stopped-cat is stopped: nothing was typed")
    expect(said).to_have_text(re.compile(r"\(restart it to type\)$"))
    assert server.logs("stopped-cat") == log


def test_keys_typed_into_an_ended_session_with_a_write_token_are_not_told_to_restart(server, new_page):
    """A write token's page has no restart button: keys typed into its ended session are said
    not to reach it, without "restart it to type" (which only an admin can)."""
    s = server.spawn(["sh", "-c", "echo ready; exit 0"], name="ended-write")
    wait_until(lambda: server.session(s["id"])["state"] != "running", 10, "ended-write to end")
    page = new_page()
    page.goto(server.login_url(token=server.scoped_token(s["id"], "write"), hash=f"/s/{s['id']}"))
    wait_js(page, "window.corral.termText().includes('process ended')", 15, "the end")
    expect(page.get_by_test_id("btn-restart")).to_have_count(0)
    page.get_by_test_id("terminal").click()
    page.keyboard.type("x")
    said = page.get_by_test_id("toast").filter(has_text="ended-write is stopped: nothing was typed")
    expect(said).to_be_visible()
    assert "restart" not in said.text_content()


def test_the_tab_title_names_the_session_and_its_program_title(server, page):
    # The program sets its window title before the page opens (the snapshot carries it), then
    # sets a new one for each line it reads.
    prog = "printf '\\033]0;step one\\007'; echo ready; while read l; do printf '\\033]2;%s\\007' \"$l\"; done"
    s = server.spawn(["sh", "-c", prog], name="titled")
    open_term(server, page, s["id"])
    expect(page).to_have_title("titled: step one — corral")
    page.get_by_test_id("terminal").click()
    page.keyboard.type("step two")
    page.keyboard.press("Enter")
    expect(page).to_have_title("titled: step two — corral")
    # Back to the list: the title is the list's again.
    page.get_by_test_id("back").click()
    expect(page.get_by_test_id("session-list")).to_be_visible()
    expect(page).to_have_title("corral")


def test_a_restarted_session_has_no_title_until_its_new_program_sets_one(server, page):
    """A window title is the program's: after a restart from the page the tab no longer names
    the old program's title (`(1) sz4: my-build-title — corral` stayed), and the new program's
    own title shows again once it sets one."""
    prog = "echo ready; while read l; do printf '\\033]0;%s\\007' \"$l\"; done"
    s = server.spawn(["sh", "-c", prog], name="retitled")
    open_term(server, page, s["id"])
    page.get_by_test_id("terminal").click()
    page.keyboard.type("my-build-title")
    page.keyboard.press("Enter")
    expect(page).to_have_title("retitled: my-build-title — corral")
    pid = server.session(s["id"])["pid"]
    page.get_by_test_id("btn-restart").click()
    page.get_by_test_id("confirm-ok").click()
    wait_until(lambda: server.session(s["id"])["pid"] not in (None, pid), 10, "the new process")
    wait_js(page, "window.corral.termText().split('ready').length === 3", 10, "the new process's output")
    expect(page).to_have_title("retitled — corral")
    page.get_by_test_id("terminal").click()
    page.keyboard.type("second run")
    page.keyboard.press("Enter")
    expect(page).to_have_title("retitled: second run — corral")


def test_the_page_works_under_a_path_prefix(server, page):
    """Behind a reverse proxy that serves corral under `/corral/` (nginx's `location /corral/`),
    the page logs in, lists, attaches and types: its API calls and its WebSocket are relative to
    its own location (they were absolute, `/v1/...`, and the login failed with a 404)."""
    s = server.spawn(READY_CAT, name="prefixed")
    proxy = PrefixProxy(server.port)
    try:
        page.goto(f"http://127.0.0.1:{proxy.port}/corral/?token={server.token}#/s/{s['id']}")
        expect(page.get_by_test_id("terminal")).to_be_visible()
        wait_js(page, "window.corral.termText().includes('ready')", 15, "the screen through the prefix")
        expect(page.get_by_test_id("conn-state")).to_have_text("connected")
        page.get_by_test_id("terminal").click()
        page.keyboard.type("through the proxy")
        page.keyboard.press("Enter")
        assert server.wait_output("prefixed", b"through the proxy\r\nthrough the proxy\r\n")
        assert all(p.startswith("/corral/") for p in proxy.paths), proxy.paths
        assert any(p.startswith("/corral/v1/ws") for p in proxy.paths), proxy.paths
    finally:
        proxy.close()


def test_a_view_opened_late_scrolls_back_through_what_scrolled_off(server, page):
    """A session printed 300 numbered lines (a dozen screens) before anyone looked: a view
    opened now holds every one in its scrollback and on its screen, in order, once each (the
    server rebuilds the rows that scrolled off from the output it still holds); the view then
    goes on live below them."""
    script = 'for i in $(seq 1 300); do printf "\\033[32mline %d\\033[0m\\n" $i; done; exec cat'
    s = server.spawn(["sh", "-c", script], name="history")
    wait_until(lambda: server.session(s["id"])["output_offset"] >= 3000, 10, "the output")
    page.goto(server.login_url(hash=f"/s/{s['id']}"))
    wait_js(page, "window.corral.termText().includes('line 300')", what="the screen")
    lines = [l for l in term_lines(page) if l.startswith("line ")]
    missing = [i for i in range(1, 301) if f"line {i}" not in lines]
    assert lines == [f"line {i}" for i in range(1, 301)], (len(lines), missing, term_lines(page)[:5])
    page.locator(".xterm-helper-textarea").focus()
    page.keyboard.type("live\n")
    wait_js(page, "window.corral.termText().includes('live\\nlive')", what="the echo")
    assert [l for l in term_lines(page) if l.startswith("line ")] == lines


def test_a_taller_view_opened_late_shows_no_blank_rows_between_history_and_screen(server, page):
    """A session of 24 rows opened by a taller page (which sizes the session to itself): the
    screen takes back the rows that scrolled off last, as a terminal made taller does, so the
    view reads straight from its scrollback into its screen. The server's screen put blank rows
    there instead (16 of them for a 40-row page, between `after 27` and `after 28`). A bare erase
    of the scrollback (ED3) on the way drops what scrolled off before it, not the rows then on
    the screen."""
    script = (
        "for i in $(seq 1 40); do echo secret $i; done; printf '\\033[3J'; "
        "for i in $(seq 1 50); do echo after $i; done; exec cat"
    )
    s = server.spawn(["sh", "-c", script], name="taller", size={"rows": 24, "cols": 80})
    server.wait_output("taller", b"after 50\r\n", 10)
    page.goto(server.login_url(hash=f"/s/{s['id']}"))
    wait_js(page, "window.corral.termText().includes('after 50')", what="the screen")
    assert server.session(s["id"])["size"]["rows"] > 30, "the page is taller than the session was"
    lines = term_lines(page)
    while lines and not lines[-1].strip():
        lines.pop()
    # What the screen showed at the erase (rows 18 to 40 and the cursor's) stays.
    want = [f"secret {i}" for i in range(18, 41)] + [f"after {i}" for i in range(1, 51)]
    assert lines == want, lines


def test_a_much_taller_view_takes_back_every_row(server, page):
    """A page more than 64 rows taller than its session (a tall monitor): every row the
    screen gained comes back from what scrolled off, none blank (the replay that fills them
    kept 64 rows, so the rows above were blank)."""
    page.set_viewport_size({"width": 1280, "height": 2400})
    script = "for i in $(seq 1 300); do echo line $i; done; exec cat"
    s = server.spawn(["sh", "-c", script], name="tall", size={"rows": 24, "cols": 80})
    server.wait_output("tall", b"line 300\r\n", 10)
    page.goto(server.login_url(hash=f"/s/{s['id']}"))
    wait_js(page, "window.corral.termText().includes('line 300')", what="the screen")
    rows = server.session(s["id"])["size"]["rows"]
    assert rows > 24 + 64, f"the page ({rows} rows) is more than 64 rows taller than the session"
    lines = term_lines(page)
    while lines and not lines[-1].strip():
        lines.pop()
    assert lines == [f"line {i}" for i in range(1, 301)], lines


def test_a_structured_agent_s_output_reads_as_a_conversation(server, page, tmp_path):
    """A structured agent (stream-json mode) prints a JSON object per line: the view shows its
    text, a line per tool call, question and result, and the end of its turn — not the JSON,
    which was all the page showed. A fresh view of it (its backlog) shows the same."""
    import json

    lines = [
        {"type": "system", "subtype": "init", "model": "claude-stub", "cwd": "/work"},
        {"type": "assistant", "message": {"content": [
            {"type": "text", "text": "I will create the file."},
            {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "touch made"}},
        ]}},
        {"type": "control_request", "request_id": "r1",
         "request": {"subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "touch made"}}},
        {"type": "user", "message": {"content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "made it", "is_error": False},
        ]}},
        {"type": "assistant", "message": {"content": [{"type": "text", "text": "The file is there."}]}},
        {"type": "result", "subtype": "success", "is_error": False, "duration_ms": 1500, "total_cost_usd": 0.01},
    ]
    fixture = tmp_path / "lines.jsonl"
    fixture.write_text("".join(json.dumps(l) + "\n" for l in lines))
    # The profile's flags follow the program: a stand-in that ignores them.
    program = tmp_path / "stand-in"
    program.write_text(f"#!/bin/sh\ncat '{fixture}'\nexec sleep 600\n")
    program.chmod(0o755)
    s = server.spawn([str(program)], name="structured", mode="stream_json", agent="claude")
    server.wait_output("structured", b'"type": "result"', 10)
    want = [
        "● session started · claude-stub · /work",
        "I will create the file.",
        "● Bash(touch made)",
        "? asks to use Bash: touch made",
        "  └ made it",
        "The file is there.",
        "— turn done · 1.5 s · $0.0100 —",
    ]
    for fresh in range(2):
        page.goto(server.login_url(hash=f"/s/{s['id']}"))
        wait_js(page, "window.corral.termText().includes('turn done')", 15, "the turn's end on the screen")
        shown = [l for l in term_lines(page) if l.strip()]
        assert shown[: len(want)] == want, shown
        assert not any('"type"' in l for l in shown), shown
        if not fresh:
            page.screenshot(path=str(tmp_path / "structured.png"))
            page.goto("about:blank")
    # The log keeps the JSON as it was.
    assert b'"type": "assistant"' in server.logs("structured")
