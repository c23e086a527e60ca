"""Sessions opened and left: nothing of a terminal view outlives it. The page is left open for
days while sessions are opened one after another (a phone shows one at a time), so each view
left must give back its memory (xterm's buffers: up to 10 000 rows), its WebGL context (a page
has 16 at most: past them Chrome drops the oldest, with a warning) and its subscription on the
page's connection (which streams its output until it ends, and counts towards the connection's
256). Found in a walk-through: 10 sessions opened in turn grew the page's heap by 8 MB a round
for good, with a live WebGL context per view; a view left before its subscribe was answered
stayed subscribed until the browser closed (24 to 33 of 40 sessions switched through fast)."""

import time

from corral_web import wait_js, wait_until

TOO_MANY_CONTEXTS = "Too many active WebGL contexts"


def heap_used(cdp) -> int:
    """The page's JavaScript memory in use after a full garbage collection, in bytes: its heap
    and the array buffers' contents (xterm's rows are typed arrays, kept outside the heap;
    `performance.memory` is rounded to 10 MB here)."""
    cdp.send("HeapProfiler.collectGarbage")
    cdp.send("HeapProfiler.collectGarbage")
    use = cdp.send("Runtime.getHeapUsage")
    return use["usedSize"] + use["backingStorageSize"]


def live(cdp, prototype: str, where: str = "true") -> int:
    """How many objects with `prototype` (a JS expression) the page's heap holds after a garbage
    collection, for which `where` (JS, of `o`) holds: in the document or not, a view's objects
    anything still references are counted."""
    cdp.send("HeapProfiler.collectGarbage")
    proto = cdp.send("Runtime.evaluate", {"expression": prototype, "objectGroup": "leak"})["result"]["objectId"]
    found = cdp.send("Runtime.queryObjects", {"prototypeObjectId": proto, "objectGroup": "leak"})["objects"]
    n = cdp.send(
        "Runtime.callFunctionOn",
        {
            "objectId": found["objectId"],
            "functionDeclaration": f"function () {{ return this.filter((o) => {where}).length; }}",
            "returnByValue": True,
        },
    )["result"]["value"]
    cdp.send("Runtime.releaseObjectGroup", {"objectGroup": "leak"})
    return n


def terminals_and_contexts(cdp) -> tuple[int, int]:
    """The xterm terminals alive in the page (their root elements) and its WebGL contexts."""
    return (
        live(cdp, "HTMLDivElement.prototype", "o.classList.contains('xterm')"),
        live(cdp, "WebGL2RenderingContext.prototype"),
    )


def test_views_left_give_back_their_memory_and_webgl_contexts(server, page):
    """Ten sessions with 3000 lines of scrollback each, opened in turn for three rounds (30 views,
    more than the 16 WebGL contexts a page may have), back to the list after each round: once
    collected, the heap after the third round is the heap after the first (a view that stayed
    alive held its terminal's rows, ~7 MB here), no xterm terminal or WebGL context is left on
    the list page, and Chrome never had to drop an old context. xterm.js 6.0's WebGL renderer
    kept its cursor blink interval running after `dispose` (xterm.js#5818), and that interval
    held the renderer, the terminal and its context for as long as the page lived."""
    ids = [
        server.spawn(
            ["sh", "-c", f"seq -f 'scrollback line %g of session {i}' 1 3000; echo ready{i}; exec cat"],
            name=f"mem{i}",
        )["id"]
        for i in range(10)
    ]
    warnings: list[str] = []
    page.on("console", lambda m: warnings.append(m.text) if TOO_MANY_CONTEXTS in m.text else None)
    page.goto(server.login_url())
    wait_js(page, "document.querySelectorAll('[data-testid=\"session-row\"]').length >= 10", 15, "the list")
    cdp = page.context.new_cdp_session(page)
    rounds = []
    for _ in range(3):
        for i, sid in enumerate(ids):
            page.evaluate(f"location.hash = '#/s/{sid}'")
            wait_js(
                page,
                f"window.corral.sessionId() === '{sid}' && window.corral.termText().includes('ready{i}')",
                15,
                f"session mem{i} on the screen",
            )
        # While a view is open: its terminal and its context, no more.
        viewing = terminals_and_contexts(cdp)
        page.evaluate("location.hash = '#/'")
        wait_js(page, "!!document.querySelector('[data-testid=\"session-row\"]')", 10, "the list")
        rounds.append({"viewing": viewing, "left": terminals_and_contexts(cdp), "heap MB": round(heap_used(cdp) / 1e6, 1)})
    grew = rounds[-1]["heap MB"] - rounds[0]["heap MB"]
    assert all(r["viewing"] == (1, 1) and r["left"] == (0, 0) for r in rounds), rounds
    assert grew < 3, f"the heap grew by {grew:.1f} MB over 20 views: {rounds}"
    assert not warnings, warnings[:3]


def viewers(server, ids) -> int:
    return sum(server.session(sid)["viewers"] for sid in ids)


def test_a_view_left_before_its_subscribe_was_answered_unsubscribes(server, page):
    """A view subscribes when it opens and unsubscribes when it is left; left before the server
    answered its subscribe (the page's answer had no channel yet to end), it must unsubscribe as
    soon as the answer comes. Checked with the server's count of viewers: back to 0 after a view
    left at once, and after 30 sessions switched through as fast as the page goes. And a late
    unsubscribe (it names the session) must not end the subscription of a newer view of the
    same session, opened meanwhile: that view keeps receiving output, counted as a viewer."""
    ids = [
        server.spawn(["sh", "-c", "echo ready; while :; do date +%s%N; sleep 0.1; done"], name=f"fast{i}")["id"]
        for i in range(30)
    ]
    page.goto(server.login_url())
    wait_js(page, "document.querySelectorAll('[data-testid=\"session-row\"]').length >= 30", 15, "the list")

    # Opened and left the moment its subscribe goes out (its answer comes after). (Left in the
    # same tick it was opened, a view sends no subscribe at all: that tested nothing.)
    page.evaluate(
        """(sid) => {
            const send = WebSocket.prototype.send;
            WebSocket.prototype.send = function (data) {
                send.call(this, data);
                if (typeof data === 'string' && data.includes('"subscribe"') && data.includes(sid)) {
                    WebSocket.prototype.send = send;
                    location.hash = '#/';
                    window.__leftAtItsSubscribe = true;
                }
            };
            location.hash = '#/s/' + sid;
        }""",
        ids[0],
    )
    # (A count of 0 viewers below proves nothing unless the subscribe went out.)
    wait_js(page, "window.__leftAtItsSubscribe === true", 5, "the view's subscribe sent, and the view left")
    time.sleep(1)  # the answer, and the unsubscribe after it
    assert viewers(server, ids) == 0, "a view left at once is still subscribed"

    # Switched through, then back to the list.
    for sid in ids:
        page.evaluate(f"location.hash = '#/s/{sid}'")
    page.evaluate("location.hash = '#/'")
    time.sleep(1)
    wait_until(lambda: viewers(server, ids) == 0, 5, "no viewer after switching through 30 sessions")

    # Opened, left while its subscribe is on its way, and opened again before the answer: the
    # first view's unsubscribe, when its answer comes, is not sent (it would end the second's).
    sid = ids[1]
    for _ in range(3):
        page.evaluate(
            """async (sid) => {
                const go = (hash) => { location.hash = hash; window.onhashchange(); };
                go(`#/s/${sid}`);
                for (let i = 0; i < 20; i++) await Promise.resolve(); // its subscribe goes out
                go('#/');
                go(`#/s/${sid}`);
            }""",
            sid,
        )
        wait_js(page, "window.corral.termText().includes('ready')", 10, "the second view's screen")
        at = page.evaluate("window.corral.receivedOffset()")
        wait_js(page, f"window.corral.receivedOffset() > {at}", 5, "the second view's live output")
        assert server.session(sid)["viewers"] == 1
        page.evaluate("location.hash = '#/'")
        wait_until(lambda: server.session(sid)["viewers"] == 0, 5, "no viewer once it is left")
