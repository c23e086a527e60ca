"""Helpers shared by the browser tests (conftest.py) and the scripts next to them
(screenshots.py, page_speed.py): a real `corral serve` in a temp data dir, Debian's chromium
driven by Playwright, polling helpers that work under the page's strict CSP, a server-side
socket drop (`ss -K`, or a TCP proxy when the kernel refuses), and image statistics computed
in the browser (no imaging library needed).

Nothing here skips: a missing binary, chromium or Playwright is an error.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORRAL = Path(os.environ.get("CORRAL_BIN", REPO / "target" / "debug" / "corral"))
CHROMIUM = os.environ.get("CORRAL_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags chromium tries to reach Google's services, and this
# machine's closed network refuses those connections (noisy, and slows start-up).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_tools() -> None:
    """Fails loudly (never skips) when a prerequisite is missing."""
    problems = []
    if not CORRAL.is_file() or not os.access(CORRAL, os.X_OK):
        problems.append(f"corral binary not found at {CORRAL} (build it with `cargo build`, or set CORRAL_BIN)")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        problems.append(f"chromium not found at {CHROMIUM} (run scripts/setup, or set CORRAL_CHROMIUM)")
    if problems:
        raise RuntimeError("browser tests cannot run:\n  " + "\n  ".join(problems))


def launch_browser(playwright):
    require_tools()
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


# ---- the server ---------------------------------------------------------------------------------


class ApiError(AssertionError):
    def __init__(self, status: int, body):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces and parentheses.
        rest = stat[stat.rfind(")") + 2 :].split()
        if len(rest) < 2:
            continue
        kids.setdefault(int(rest[1]), []).append(int(d))
    return kids


def descendants(pid: int) -> set[int]:
    kids = _children_map()
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


class Server:
    """`corral serve` on 127.0.0.1:<free port> with its own temp data dir."""

    def __init__(self, data_dir: str | None = None, keep: bool = False, config: str | None = None):
        self.own_dir = data_dir is None
        # TOML for `--config` (e.g. "[agents]\npermission_wait_secs = 3"), written to the data dir.
        self.config = config
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="corral-browser-")
        self.keep = keep
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.port = 0
        self.token = ""
        self.log_path = os.path.join(self.data_dir, "serve.log")

    # -- lifecycle --

    def start(self, timeout: float = 30.0) -> "Server":
        require_tools()
        log = open(self.log_path, "ab")
        extra = []
        if self.config is not None:
            path = Path(self.data_dir, "config.toml")
            path.write_text(self.config)
            extra = ["--config", str(path)]
        self.proc = subprocess.Popen(
            [str(CORRAL), "--data-dir", self.data_dir, "serve", "--listen", "127.0.0.1:0", *extra],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        log.close()
        deadline = time.monotonic() + timeout
        info_path = Path(self.data_dir, "server.json")
        token_path = Path(self.data_dir, "token")
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"corral serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                info = json.loads(info_path.read_text())
                token = token_path.read_text().strip()
                if info.get("pid") == self.proc.pid and token:
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"corral serve did not write server.json in {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)
        self.url = info["url"].rstrip("/")
        self.port = int(self.url.rsplit(":", 1)[1])
        self.token = token
        health = self.api("GET", "/v1/health", token=None)
        assert health.get("status") == "ok", health
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, wait, then make sure nothing the server started is left running."""
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        leftovers: set[int] = set()
        try:
            if proc.poll() is None:
                kids = descendants(proc.pid)
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    raise AssertionError(f"corral serve ignored SIGTERM for {timeout}s:\n{self.log_tail()}")
                deadline = time.monotonic() + 5
                while True:
                    leftovers = {p for p in kids if _alive(p)}
                    if not leftovers or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                for p in leftovers:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            assert proc.returncode == 0, f"corral serve exited with {proc.returncode}:\n{self.log_tail()}"
            assert not leftovers, f"processes left behind after the server stopped: {sorted(leftovers)}"
        finally:
            if self.own_dir and not self.keep:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return Path(self.log_path).read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return "(no log)"

    # -- HTTP API --

    def api(self, method: str, path: str, body=None, token: str | None | bool = True, ok=(200, 201, 202, 204)):
        headers = {}
        if token is True:
            token = self.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        req = urllib.request.Request(self.url + path, method=method, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        if status not in ok:
            raise ApiError(status, parsed)
        return parsed

    def spawn(self, argv: list[str], name: str | None = None, **spec) -> dict:
        spec["argv"] = argv
        if name:
            spec["name"] = name
        return self.api("POST", "/v1/sessions", spec)

    def session(self, ident: str) -> dict:
        return self.api("GET", f"/v1/sessions/{ident}")

    def sessions(self) -> list[dict]:
        r = self.api("GET", "/v1/sessions")
        return r["sessions"] if isinstance(r, dict) else r

    def remove(self, ident: str) -> None:
        self.api("DELETE", f"/v1/sessions/{ident}")

    def scoped_token(self, session: str, scope: str) -> str:
        return self.api("POST", "/v1/tokens", {"session": session, "scope": scope})["token"]

    def hook(self, session: str, event: dict) -> None:
        self.api("POST", f"/v1/sessions/{session}/events", event)

    def logs(self, session: str) -> bytes:
        """The session's retained output, as `corral logs` prints it."""
        r = subprocess.run(
            [str(CORRAL), "--data-dir", self.data_dir, "logs", session],
            capture_output=True,
            timeout=60,
        )
        assert r.returncode == 0, f"corral logs {session} failed: {r.stderr.decode(errors='replace')}"
        return r.stdout

    def wait_output(self, session: str, needle: bytes, timeout: float = 15) -> bytes:
        return wait_until(
            lambda: (lambda b: b if needle in b else None)(self.logs(session)),
            timeout,
            f"{needle!r} in the output of {session}",
        )

    def web_link(self) -> str:
        """The login link `corral web` prints (a code, good once)."""
        r = subprocess.run(
            [str(CORRAL), "--data-dir", self.data_dir, "web"], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0, f"corral web failed: {r.stderr}"
        return r.stdout.strip()

    def login_url(self, token: str | None = None, hash: str = "") -> str:
        return f"{self.url}/?token={token or self.token}" + (f"#{hash}" if hash else "")


# ---- waiting ------------------------------------------------------------------------------------


def wait_until(fn, timeout: float = 10, what: str = "condition", interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {v!r}")
        time.sleep(interval)


def wait_js(page, expr: str, timeout: float = 10, what: str | None = None, arg=None):
    """Polls a JS expression from Python. Playwright's wait_for_function compiles its predicate
    with eval, which the page's CSP (default-src 'self') forbids; page.evaluate does not."""
    if arg is None:
        return wait_until(lambda: page.evaluate(expr), timeout, what or expr)
    return wait_until(lambda: page.evaluate(expr, arg), timeout, what or expr)


def term_lines(page) -> list[str]:
    text = page.evaluate("window.corral.termText()")
    return text.split("\n") if text else []


def render_log(raw: bytes) -> list[str]:
    """How a terminal shows a plain line-printing program's output: one line per `\\n`, `\\r`
    returning to the column 0 (text printed after it overwrites from the start), trailing spaces
    and trailing empty lines dropped. Refuses escape sequences (not a terminal emulator)."""
    text = raw.decode("utf-8", errors="replace")
    assert "\x1b" not in text, "render_log handles plain text only"
    lines = []
    for line in text.split("\n"):
        cells: list[str] = []
        col = 0
        for ch in line:
            if ch == "\r":
                col = 0
            elif ch == "\b":
                col = max(0, col - 1)
            else:
                if col < len(cells):
                    cells[col] = ch
                else:
                    cells.append(ch)
                col += 1
        lines.append("".join(cells).rstrip(" "))
    while lines and lines[-1] == "":
        lines.pop()
    return lines


# What makes a page wider than its viewport, beyond `scrollWidth` (which body's overflow-x: hidden
# can hide): elements sticking out sideways that no ancestor clips (overflow hidden/clip), and
# scroll containers that scroll horizontally. Returns a description of each offender.
OVERFLOW_PROBE = """
() => {
  const W = document.documentElement.clientWidth;
  const out = [];
  const name = (el) => `${el.tagName.toLowerCase()}${[...el.classList].map((c) => '.' + c).join('')}` +
    (el.dataset.testid ? `[data-testid=${el.dataset.testid}]` : '');
  const shown = (el) => {
    const s = getComputedStyle(el);
    return s.visibility !== 'hidden' && s.display !== 'none' && Number(s.opacity) > 0;
  };
  for (const el of document.body.querySelectorAll('*')) {
    if (!shown(el)) continue;
    const ox = getComputedStyle(el).overflowX;
    if ((ox === 'auto' || ox === 'scroll') && el.scrollWidth > el.clientWidth + 1) {
      out.push(`${name(el)} scrolls sideways (${el.scrollWidth} > ${el.clientWidth})`);
    }
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || (r.left >= -0.5 && r.right <= W + 0.5)) continue;
    let clipped = false;
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      const s = getComputedStyle(a);
      if (!shown(a) || s.overflowX === 'hidden' || s.overflowX === 'clip') {
        const ar = a.getBoundingClientRect();
        if (!shown(a) || (ar.left >= -0.5 && ar.right <= W + 0.5)) { clipped = true; break; }
      }
    }
    if (!clipped) out.push(`${name(el)} spans ${Math.round(r.left)}..${Math.round(r.right)}px`);
  }
  return out;
}
"""


# Recorder of every text the connection indicator showed (installed before the page's scripts,
# so even a short "reconnecting" is seen).
CONN_RECORDER = """
(() => {
  window.__connStates = [];
  const rec = () => {
    const el = document.querySelector('[data-testid="conn-state"]');
    const t = el ? el.textContent : null;
    const all = window.__connStates;
    if (t && all[all.length - 1] !== t) all.push(t);
  };
  new MutationObserver(rec).observe(document, { subtree: true, childList: true, characterData: true });
})();
"""


# ---- images ----------------------------------------------------------------------------------------


def image_stats(browser, png: bytes) -> dict:
    """Mean, standard deviation of luminance and number of distinct colours (4 bits per channel)
    of a PNG, computed with a canvas in a scratch page."""
    ctx = browser.new_context()
    try:
        p = ctx.new_page()
        return p.evaluate(
            """async (b64) => {
                const img = new Image();
                img.src = 'data:image/png;base64,' + b64;
                await img.decode();
                const c = document.createElement('canvas');
                c.width = img.naturalWidth; c.height = img.naturalHeight;
                const g = c.getContext('2d');
                g.drawImage(img, 0, 0);
                const d = g.getImageData(0, 0, c.width, c.height).data;
                let n = 0, sum = 0, sq = 0;
                const colors = new Set();
                for (let i = 0; i < d.length; i += 4) {
                    const y = 0.2126 * d[i] + 0.7152 * d[i + 1] + 0.0722 * d[i + 2];
                    n++; sum += y; sq += y * y;
                    colors.add(((d[i] >> 4) << 8) | ((d[i + 1] >> 4) << 4) | (d[i + 2] >> 4));
                }
                const mean = sum / n;
                return { width: c.width, height: c.height, mean, std: Math.sqrt(sq / n - mean * mean), colors: colors.size };
            }""",
            base64.b64encode(png).decode(),
        )
    finally:
        ctx.close()


# ---- dropping connections from the server side ----------------------------------------------------


def _ss_kill(filter_args: list[str]) -> list[str]:
    r = subprocess.run(["ss", "-K", "-tnH", *filter_args], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise OSError(f"ss -K failed ({r.returncode}): {r.stderr.strip()}")
    return [l for l in r.stdout.splitlines() if l.strip()]


def ss_can_destroy(port: int) -> bool:
    """Whether `ss -K` can destroy this server's sockets here (root + CONFIG_INET_DIAG_DESTROY):
    opens a probe connection and kills the server's end of it."""
    if shutil.which("ss") is None:
        return False
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        cport = s.getsockname()[1]
        time.sleep(0.1)  # let the server accept it
        try:
            _ss_kill(["src", "127.0.0.1", "sport", "=", f":{port}", "dst", "127.0.0.1", "dport", "=", f":{cport}"])
        except OSError:
            return False
        s.settimeout(3)
        try:
            got = s.recv(1)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        return got == b""
    finally:
        s.close()


def ss_drop_server_side(port: int) -> list[str]:
    """Destroys the server's end of every established connection on `port` (the client sees a
    reset; the server's next read or write on it fails). Returns the sockets killed."""
    return _ss_kill(["state", "established", "src", "127.0.0.1", "sport", "=", f":{port}"])


class CutProxy:
    """A TCP proxy in front of the server whose connections can be cut at once (RST to both
    ends): the fallback when the kernel refuses `ss -K`."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, u]
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> int:
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                # linger 0: close sends a reset, like a dropped connection
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RD)  # wakes the pump blocked in recv
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        return len(conns) // 2

    def close(self):
        self.closed = True
        self.lsock.close()
        self.cut()


# ---- a minimal WebSocket client (for reference measurements without a browser) -----------------


class RawWs:
    """Just enough of RFC 6455 to talk corral.v1 from Python: bearer auth at the upgrade,
    masked client frames, unfragmented server frames."""

    def __init__(self, server: Server, token: str | None = None):
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: corral.v1\r\nAuthorization: Bearer {token or server.token}\r\n\r\n"
        )
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the upgrade")
            head += chunk
        status, _, self.buf = head.partition(b"\r\n\r\n")
        if b" 101 " not in status.split(b"\r\n")[0]:
            raise ConnectionError(status.decode(errors="replace"))
        self.next_id = 1

    def _send(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        """('text', dict) or ('binary', kind, channel, offset, payload); answers pings."""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            op = b0 & 0x0F
            if op == 1:
                return ("text", json.loads(payload))
            if op == 2:
                kind, ch, off = struct.unpack(">BIQ", payload[:13])
                return ("binary", kind, ch, off, payload[13:])
            if op == 9:
                self._send(10, payload)
            elif op == 8:
                raise ConnectionError("closed by the server")

    def request(self, msg: dict) -> dict:
        msg = {**msg, "id": self.next_id}
        self.next_id += 1
        self._send(1, json.dumps(msg).encode())
        while True:
            r = self.recv()
            if r[0] == "text" and r[1].get("id") == msg["id"]:
                return r[1]

    def input(self, channel: int, data: bytes) -> None:
        self._send(2, struct.pack(">BIQ", 3, channel, 0) + data)

    def close(self) -> None:
        try:
            self._send(8, b"")
        except OSError:
            pass
        self.sock.close()


class PrefixProxy:
    """A reverse proxy that serves corral under a path prefix (`/corral/...` → `/...`), as nginx's
    `location /corral/ { proxy_pass http://corral/; }` does, Host passed through. Each HTTP
    request gets a connection of its own (`Connection: close`), so only a request line needs
    rewriting; a WebSocket upgrade is then piped as it is."""

    def __init__(self, target_port: int, prefix: str = "/corral"):
        self.target = ("127.0.0.1", target_port)
        self.prefix = prefix.encode()
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.closed = False
        self.paths: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket):
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                d = c.recv(65536)
                if not d:
                    c.close()
                    return
                head += d
            end = head.index(b"\r\n\r\n")
            lines = head[:end].split(b"\r\n")
            method, path, version = lines[0].split(b" ", 2)
            self.paths.append(path.decode(errors="replace"))
            if not path.startswith(self.prefix + b"/"):
                c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                c.close()
                return
            path = path[len(self.prefix):]
            upgrade = any(l.lower().startswith(b"upgrade:") for l in lines[1:])
            kept = [l for l in lines[1:] if not l.lower().startswith(b"connection:")]
            kept.append(b"Connection: Upgrade" if upgrade else b"Connection: close")
            u = socket.create_connection(self.target)
            u.sendall(b" ".join([method, path, version]) + b"\r\n" + b"\r\n".join(kept) + b"\r\n\r\n" + head[end + 4:])
        except OSError:
            c.close()
            return
        threading.Thread(target=CutProxy._pump, args=(c, u), daemon=True).start()
        threading.Thread(target=CutProxy._pump, args=(u, c), daemon=True).start()

    def close(self):
        self.closed = True
        self.lsock.close()
