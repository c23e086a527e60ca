"""Phone layout at 375×667 (touch, mobile viewport): the session list and a terminal each fit
the width (no horizontal scroll: scrollWidth, and no element sticking out unclipped nor any
scroll container scrolling sideways, even with a long name, a long command and a line wider than
the screen), their screenshots are not blank (pixel variance and colour count), and the
terminal's key bar is shown inside the viewport. The session's header stays whole on a short or
narrow phone (390×500, 320 wide); a larger screen shown scaled down has its scrollbar at its
edge; a read-only phone pans a desktop's wide screen at a readable font instead."""

import re

from playwright.sync_api import expect

from corral_web import OVERFLOW_PROBE, RawWs, image_stats, wait_js, wait_until

WIDTH = 375


def assert_fits(page):
    sw = page.evaluate("document.documentElement.scrollWidth")
    bw = page.evaluate("document.body.scrollWidth")
    assert sw <= WIDTH and bw <= WIDTH, f"horizontal scroll: documentElement {sw}px, body {bw}px"
    # body has overflow-x: hidden, which would hide an overflow from scrollWidth: look closer.
    assert page.evaluate(OVERFLOW_PROBE) == [], "wider than the screen"


def assert_not_blank(browser, png):
    st = image_stats(browser, png)
    assert (st["width"], st["height"]) == (WIDTH, 667), st
    assert st["std"] > 12 and st["colors"] > 24, f"screenshot looks blank: {st}"


def test_phone_list_and_terminal_fit(server, browser, new_page):
    server.spawn(["cat"], name="phone-cat")
    server.spawn(["sleep", "3600"], name="a-rather-long-session-name-for-a-small-screen")
    long_cmd = "printf '%s\\n' ready " + "x" * 300 + "; exec cat"
    s = server.spawn(["sh", "-c", long_cmd], name="wide-output")
    page = new_page(phone=True)

    page.goto(server.login_url())
    expect(page.get_by_test_id("session-count")).to_have_text(re.compile(r"^3 sessions"))
    expect(page.get_by_test_id("session-row")).to_have_count(3)
    expect(page.get_by_test_id("spawn-form")).to_be_attached()
    page.wait_for_timeout(300)  # fonts and layout settle
    assert_fits(page)
    for box in page.get_by_test_id("session-row").evaluate_all("rs => rs.map(r => r.getBoundingClientRect().right)"):
        assert box <= WIDTH, f"a row sticks out: right edge at {box}px"
    assert_not_blank(browser, page.screenshot())

    page.locator(f'[data-testid="session-row"][data-session-id="{s["id"]}"]').click()
    expect(page.get_by_test_id("terminal")).to_be_visible()
    wait_js(page, "window.corral.termText().includes('xxxxxxxxxx')", 15, "the wide line on screen")
    wait_js(page, "window.corral.connState() === 'connected'", 10)
    page.wait_for_timeout(300)
    assert_fits(page)
    term = page.get_by_test_id("terminal").bounding_box()
    assert term and term["x"] >= 0 and term["x"] + term["width"] <= WIDTH, term
    screen_w = page.evaluate("document.querySelector('[data-testid=terminal] .xterm-screen').offsetWidth")
    assert screen_w <= WIDTH, screen_w
    # The PTY was sized to the phone: far fewer than 80 columns.
    size = server.session(s["id"])["size"]
    assert 20 <= size["cols"] < 80, size

    keybar = page.get_by_test_id("keybar")
    expect(keybar).to_be_visible()
    kb = keybar.bounding_box()
    assert kb["y"] + kb["height"] <= 667 + 0.5 and kb["x"] + kb["width"] <= WIDTH + 0.5, kb
    for key in ("key-esc", "key-ctrl-c", "key-tab", "key-up"):
        expect(page.get_by_test_id(key)).to_be_visible()
    assert_not_blank(browser, page.screenshot())


# What is wrong with the page's two headers (the topbar, the session's): a control or text
# outside the screen, cut short, wrapped onto a second line, or over another.
HEADER_PROBE = """
() => {
  const W = document.documentElement.clientWidth;
  const shown = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  const els = [...document.querySelectorAll('.topbar > *, .term-title > *, .actions > *')]
    .filter((el) => shown(el) && el.getBoundingClientRect().width > 0);
  const name = (el) => el.dataset.testid || el.className;
  const out = [];
  for (const el of els) {
    const r = el.getBoundingClientRect();
    if (r.left < -0.5 || r.right > W + 0.5) out.push(`${name(el)} spans ${Math.round(r.left)}..${Math.round(r.right)}px`);
    if (el.scrollWidth > el.clientWidth + 1) out.push(`${name(el)} is cut: ${el.scrollWidth} > ${el.clientWidth}px`);
    const text = [];
    const walk = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let n = walk.nextNode(); n; n = walk.nextNode()) {
      const range = document.createRange();
      range.selectNodeContents(n);
      text.push(...range.getClientRects());
    }
    const top = Math.min(...text.map((t) => t.bottom));
    if (text.some((t) => t.top >= top - 1)) out.push(`${name(el)} wraps onto more than one line`);
  }
  for (let i = 0; i < els.length; i++) {
    for (let j = i + 1; j < els.length; j++) {
      const a = els[i].getBoundingClientRect();
      const b = els[j].getBoundingClientRect();
      const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (w > 1 && h > 1) out.push(`${name(els[i])} and ${name(els[j])} overlap`);
    }
  }
  return out;
}
"""


def test_the_session_header_stays_usable_on_a_short_or_narrow_phone(server, new_page):
    # A phone upright with its keyboard up (390x500) and a narrow one (320 wide): the session's
    # name, its state and every action are on the screen, whole, apart. The rule for a phone in
    # landscape (short: the header on one line) took the upright phone with its keyboard up:
    # the name shrank to nothing, "running" went under "events" and "remove" off the screen.
    s = server.spawn(["cat"], name="sz4")
    for vw, vh in ((390, 500), (320, 500), (320, 568), (844, 390)):
        page = new_page(viewport={"width": vw, "height": vh}, phone=True)
        page.goto(server.login_url(hash=f"/s/{s['id']}"))
        wait_js(page, "window.corral.connState() === 'connected' && window.corral.sessionId() !== null", 15)
        expect(page.get_by_test_id("term-state")).to_have_text("running")
        page.wait_for_timeout(300)  # fonts and layout settle
        assert page.evaluate(HEADER_PROBE) == [], (vw, vh)
        assert page.evaluate(OVERFLOW_PROBE) == [], (vw, vh)
        for testid in ("term-name", "term-state", "btn-restart", "btn-stop", "btn-kill", "btn-remove"):
            expect(page.get_by_test_id(testid)).to_be_in_viewport(ratio=1)
        page.close()


def test_a_long_name_gives_way_to_the_actions_on_a_phone_in_landscape(server, new_page):
    # 667x375: the six actions on one line kept their size and the name its ellipsis (they
    # shrank to 44 px, their labels over each other, and "remove" went off the screen).
    s = server.spawn(["cat"], name="a-really-long-session-name-for-the-refactoring-agent")
    page = new_page(viewport={"width": 667, "height": 375}, phone=True)
    page.goto(server.login_url(hash=f"/s/{s['id']}"))
    wait_js(page, "window.corral.connState() === 'connected' && window.corral.sessionId() !== null", 15)
    expect(page.get_by_test_id("term-state")).to_have_text("running")
    page.wait_for_timeout(300)  # fonts and layout settle
    # The name is cut on purpose (its ellipsis); nothing else may be.
    assert [p for p in page.evaluate(HEADER_PROBE) if not p.startswith("term-name is cut")] == []
    for testid in ("term-name", "term-state", "btn-restart", "btn-stop", "btn-kill", "btn-remove"):
        expect(page.get_by_test_id(testid)).to_be_in_viewport(ratio=1)


def phone_on(server, new_page, s):
    """A phone showing session `s` at its own size: the page and that size."""
    phone = new_page(phone=True)
    phone.goto(server.login_url(hash=f"/s/{s['id']}"))
    wait_js(phone, "window.corral.connState() === 'connected' && window.corral.sessionId() !== null", 15)
    wait_until(lambda: server.session(s["id"])["size"]["cols"] < 80, 10, "the phone's size")
    return phone, phone.evaluate("window.corral.termSize()")


def desktop_types_into(server, new_page, s):
    """A desktop that opens session `s` and types into it (its size wins): the page and that size."""
    desktop = new_page()
    desktop.goto(server.login_url(hash=f"/s/{s['id']}"))
    wait_js(desktop, "window.corral.connState() === 'connected' && window.corral.sessionId() !== null", 15)
    desktop.get_by_test_id("terminal").click()
    desktop.keyboard.type("x")
    wide = wait_js(desktop, "window.corral.termSize()", 5)
    wait_until(lambda: server.session(s["id"])["size"]["cols"] == wide["cols"], 10, "the desktop's size")
    return desktop, wide


def test_a_phone_beside_a_desktop_shows_the_session_at_its_size_and_gets_it_back(server, new_page):
    # A phone watches a session; a desktop opens it too and types (its size wins): the phone
    # shows the program at the desktop's width, its font shrunk to fit (it drew a 160-column
    # program into 50 columns, unreadable), without asking for that size itself; when the
    # desktop leaves, the phone has its own size back, at its own font.
    s = server.spawn(["cat"], name="shared")
    phone, own = phone_on(server, new_page, s)
    assert server.session(s["id"])["size"]["cols"] == own["cols"], own
    desktop, wide = desktop_types_into(server, new_page, s)
    expect(phone.get_by_test_id("terminal")).to_have_attribute("data-following", "true")
    wait_js(phone, f"window.corral.termSize().cols === {wide['cols']}", 10, "the phone to show the desktop's width")
    shown = phone.evaluate("window.corral.termSize()")
    assert shown["font"] < own["font"], (own, shown)
    # All of it on the phone's screen (scaled down past the smallest font), none cut off.
    right = phone.evaluate("document.querySelector('[data-testid=terminal] .xterm-screen').getBoundingClientRect().right")
    assert right <= WIDTH + 0.5, right
    # The phone asked for nothing meanwhile: the session is still the desktop's size.
    assert server.session(s["id"])["size"]["cols"] == wide["cols"]
    desktop.close()
    wait_until(lambda: server.session(s["id"])["size"]["cols"] == own["cols"], 10, "the phone's size back")
    expect(phone.get_by_test_id("terminal")).not_to_have_attribute("data-following", "true")
    wait_js(phone, f"window.corral.termSize().cols === {own['cols']}", 10, "the phone's own width")
    assert phone.evaluate("window.corral.termSize()")["font"] == own["font"]


def test_a_phone_following_a_desktop_takes_the_size_back_with_one_tap(server, new_page):
    # While the phone shows a desktop's larger screen (tiny text), a button offers this
    # screen's size: one tap makes it the session's, as typing would, with no key sent to the
    # program; the desktop takes it again by typing.
    s = server.spawn(["cat"], name="taken")
    phone, own = phone_on(server, new_page, s)
    take = phone.get_by_test_id("take-size")
    expect(take).to_be_hidden()
    desktop, wide = desktop_types_into(server, new_page, s)
    expect(phone.get_by_test_id("terminal")).to_have_attribute("data-following", "true")
    expect(take).to_be_visible()
    before = server.session(s["id"])["output_offset"]
    take.tap()
    wait_until(lambda: server.session(s["id"])["size"]["cols"] == own["cols"], 10, "the phone's size taken")
    expect(phone.get_by_test_id("terminal")).not_to_have_attribute("data-following", "true")
    expect(take).to_be_hidden()
    wait_js(phone, f"window.corral.termSize().cols === {own['cols']}", 10, "the phone's own width")
    assert server.session(s["id"])["output_offset"] == before, "a key reached the program"
    desktop.get_by_test_id("terminal").click()
    desktop.keyboard.type("y")
    wait_until(lambda: server.session(s["id"])["size"]["cols"] == wide["cols"], 10, "the desktop's size again")
    expect(take).to_be_visible()


def test_a_screen_scaled_down_to_fit_has_its_scrollbar_at_its_right_edge(server, new_page):
    # A desktop's screen shown on the phone scaled down (past the smallest font) has its
    # scrollbar at its right edge, by the last column: the terminal kept the box's width when
    # scaled, so its scrollbar (at that width's edge) was drawn in the middle of the screen.
    s = server.spawn(["sh", "-c", "seq 1 300; exec cat"], name="scaled")
    phone, own = phone_on(server, new_page, s)
    desktop, wide = desktop_types_into(server, new_page, s)
    wait_js(phone, f"window.corral.termSize().cols === {wide['cols']}", 10, "the phone to show the desktop's width")
    where = """() => {
        const box = document.querySelector('[data-testid=terminal]');
        const screen = box.querySelector('.xterm-screen').getBoundingClientRect();
        const bar = box.querySelector('.scrollbar.vertical').getBoundingClientRect();
        return { scaled: box.querySelector('.xterm').style.transform.includes('scale'),
                 screen: screen.right, left: bar.left, right: bar.right, height: bar.height };
    }"""
    wait_js(phone, f"({where})().scaled", 10, "the screen scaled down to fit")
    got = phone.evaluate(where)
    assert got["height"] > 0 and abs(got["left"] - got["screen"]) <= 1, got
    assert got["right"] <= WIDTH + 0.5, got


# A phone's terminal box and how far it is panned.
PAN = """() => {
  const box = document.querySelector('[data-testid=terminal]');
  const screen = box.querySelector('.xterm-screen').getBoundingClientRect();
  return { left: box.scrollLeft, width: box.clientWidth, scrollWidth: box.scrollWidth,
           height: box.clientHeight, screenHeight: screen.height, font: window.corral.termSize().font };
}"""


def test_a_read_only_phone_pans_a_wide_screen_at_a_readable_font(server, browser, new_page):
    # A desktop drives the session at 158x40; a phone with a read token cannot resize it. The
    # phone drew it scaled to its width: 7 px text over the top 40% of the screen, unreadable,
    # with no way to zoom. It keeps a readable font (10 px at least) that fills its height, a
    # finger pans the screen sideways, a cue says on which side there is more, and the cursor's
    # column is brought into view as output moves it.
    wide = "".join(chr(97 + i % 26) for i in range(140))
    prog = 'read x; for i in $(seq 1 30); do printf "row %02d %s|\n" $i "$1"; done; printf "%150s" ">"; exec cat'
    s = server.spawn(["sh", "-c", prog, "sh", wide], name="ro-wide")
    desk = RawWs(server)
    try:
        desk.request({"type": "hello", "protocol": 1})
        channel = desk.request({"type": "subscribe", "session": s["id"]})["channel"]
        desk.request({"type": "resize", "session": s["id"], "rows": 40, "cols": 158, "take": True})
        wait_until(lambda: server.session(s["id"])["size"] == {"rows": 40, "cols": 158}, 10, "the desktop's size")
        desk.input(channel, b"\n")  # the rows are written at that size
        server.wait_output(s["id"], b">")
        phone = new_page(phone=True)
        phone.goto(server.login_url(server.scoped_token(s["id"], "read"), hash=f"/s/{s['id']}"))
        expect(phone.get_by_test_id("read-only")).to_be_visible()
        wait_js(phone, "window.corral.termSize()?.cols === 158 && window.corral.termText().includes('row 30')", 15)
        wait_js(phone, "window.corral.termSize().font >= 10", 5, "a readable font")
        # The cursor (column 150, after the rows) is in view: panned to the right (as far as
        # the cursor's column once the output that moves it there is all drawn).
        wait_js(
            phone,
            f"(p => p.left > 0 && p.left + p.width >= p.scrollWidth * 140 / 158)(({PAN})())",
            10,
            "the view panned to the cursor's column",
        )
        got = phone.evaluate(PAN)
        assert got["font"] >= 10, got
        assert got["scrollWidth"] > got["width"] + 100, got
        assert got["screenHeight"] >= 0.8 * got["height"], got
        assert got["left"] + got["width"] >= got["scrollWidth"] * 140 / 158, got
        expect(phone.get_by_test_id("pan-more-left")).to_be_visible()
        # The cursor goes back to column 0: so does the view.
        desk.input(channel, b"\r")
        wait_js(phone, f"({PAN})().left === 0", 10, "the view panned back to the cursor")
        expect(phone.get_by_test_id("pan-more-left")).to_be_hidden()
        expect(phone.get_by_test_id("pan-more-right")).to_be_visible()
        # A finger drags the screen to the left: the view pans right, and stays there.
        swipe_sideways(phone)
        wait_js(phone, f"({PAN})().left > 100", 5, "panned by the finger")
        expect(phone.get_by_test_id("pan-more-left")).to_be_visible()
        assert_not_blank(browser, phone.screenshot())
        assert server.session(s["id"])["size"] == {"rows": 40, "cols": 158}
    finally:
        desk.close()


def swipe_sideways(page):
    """A finger dragged over the terminal from right to left (real touch events)."""
    cdp = page.context.new_cdp_session(page)
    box = page.get_by_test_id("terminal").bounding_box()
    y = box["y"] + box["height"] / 2
    x0, x1 = box["x"] + box["width"] * 0.85, box["x"] + box["width"] * 0.15
    touch = lambda kind, x: cdp.send(
        "Input.dispatchTouchEvent",
        {"type": kind, "touchPoints": [] if x is None else [{"x": x, "y": y}]},
    )
    touch("touchStart", x0)
    for i in range(1, 9):
        touch("touchMove", x0 + (x1 - x0) * i / 8)
    touch("touchEnd", None)


def swipe(page, up: bool, lines: int = 8):
    """A finger dragged over the terminal (real touch events through the DevTools protocol)."""
    cdp = page.context.new_cdp_session(page)
    box = page.get_by_test_id("terminal").bounding_box()
    x = box["x"] + box["width"] / 2
    top, bottom = box["y"] + box["height"] * 0.15, box["y"] + box["height"] * 0.85
    y0, y1 = (bottom, top) if up else (top, bottom)
    touch = lambda kind, y: cdp.send(
        "Input.dispatchTouchEvent",
        {"type": kind, "touchPoints": [] if y is None else [{"x": x, "y": y}]},
    )
    touch("touchStart", y0)
    for i in range(1, lines + 1):
        touch("touchMove", y0 + (y1 - y0) * i / lines)
    touch("touchEnd", None)


def test_a_finger_scrolls_the_scrollback_and_a_pager(server, new_page, tmp_path):
    # On the primary screen a finger scrolls back through the history; on a pager's alternate
    # screen (no scrollback there) it scrolls the pager, with arrow keys as a wheel would.
    s = server.spawn(["sh", "-c", "seq 1 300; exec cat"], name="scrolls")
    phone = new_page(phone=True)
    phone.goto(server.login_url(hash=f"/s/{s['id']}"))
    wait_js(phone, "window.corral.termText().includes('300')", 15, "the output")
    assert phone.evaluate("window.corral.scrolledBack()") == 0
    swipe(phone, up=False)
    wait_js(phone, "window.corral.scrolledBack() > 5", 5, "scrolled back")
    text = tmp_path / "long.txt"
    text.write_text("".join(f"row {i}\n" for i in range(1, 501)))
    pager = server.spawn(["less", str(text)], name="pager")
    phone.goto(server.login_url(hash=f"/s/{pager['id']}"))
    wait_js(phone, "window.corral.termText().includes('row 1\\n')", 15, "the pager")
    swipe(phone, up=True)
    wait_js(phone, "!window.corral.termText().includes('row 1\\n')", 5, "the pager scrolled")
    first = phone.evaluate("window.corral.termText()").split("\n")[0]
    assert first.startswith("row ") and int(first.split()[1]) > 1, first


def test_the_key_bar_ctrl_types_the_next_key_with_ctrl(server, new_page):
    # A phone's keyboard has no Ctrl: the key bar's Ctrl holds it for the next key typed —
    # Ctrl-D at an empty line ends `cat` — and lets it go after.
    s = server.spawn(["cat"], name="ctrl-d")
    page = new_page(phone=True)
    page.goto(server.login_url(hash=f"/s/{s['id']}"))
    wait_js(page, "window.corral.connState() === 'connected' && window.corral.sessionId() !== null", 15)
    ctrl = page.get_by_test_id("key-ctrl")
    expect(ctrl).to_be_visible()
    page.get_by_test_id("terminal").click()
    page.keyboard.type("hi\n")
    wait_js(page, "window.corral.termText().includes('hi')", 10, "the line echoed")
    ctrl.click()
    expect(ctrl).to_have_attribute("aria-pressed", "true")
    page.keyboard.type("d")
    expect(ctrl).to_have_attribute("aria-pressed", "false")
    wait_until(lambda: server.session(s["id"])["state"] == "stopped", 10, "cat ended by Ctrl-D")
    assert server.session(s["id"])["last_exit"] == {"code": 0}


def test_the_key_bar_has_enter(server, new_page):
    # Claude's menus (its permission dialog) take ↑/↓ and then Enter: the key bar has Enter,
    # on screen with the others.
    s = server.spawn(["sh", "-c", "IFS= read -r x; printf 'got:[%s]\\n' \"$x\"; exec cat"], name="enter")
    page = new_page(phone=True)
    page.goto(server.login_url(hash=f"/s/{s['id']}"))
    wait_js(page, "window.corral.connState() === 'connected' && window.corral.sessionId() !== null", 15)
    enter = page.get_by_test_id("key-enter")
    expect(enter).to_be_visible()
    box = enter.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= WIDTH + 0.5, box
    page.get_by_test_id("terminal").click()
    page.keyboard.type("yes")
    wait_js(page, "window.corral.termText().includes('yes')", 10, "the echo")
    enter.click()
    server.wait_output(s["id"], b"got:[yes]")
