"""Drive Debian's headless Chromium over the DevTools protocol (a pipe, no extra package).

``with Chromium() as browser: page = browser.open(url)`` loads a page and
returns what it saw: every network request the page started (``requests``,
also those a Content-Security-Policy then blocked), the failed ones with why
(``failed``: {url: "csp" or the error}), a full-page PNG screenshot (``png``)
and ``evaluate(js)`` for DOM questions.
``count_colors(png, boxes, colors)`` counts, in the screenshot itself, the
pixels close to each colour inside each box (Chromium decodes the PNG).

No traffic leaves the machine: every host name resolves to nothing
(``--host-resolver-rules``) and background services are off.
"""

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Self

__all__ = ["Chromium", "Page", "chromium_path"]

LOAD_TIMEOUT_S = 20.0
TRAMPOLINE = (
    "import os, sys; r, w = int(sys.argv[1]), int(sys.argv[2]); "
    "os.dup2(r, 3); os.dup2(w, 4); os.close(r); os.close(w); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)
FLAGS = (
    "--headless",
    "--remote-debugging-pipe",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--metrics-recording-only",
    "--mute-audio",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)


def chromium_path() -> str | None:
    """The Chromium binary (CHAOSPIKA_CHROMIUM, else chromium on PATH), or None."""
    given = os.environ.get("CHAOSPIKA_CHROMIUM")
    if given:
        return given
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _above_ten(fd: int) -> int:
    """The same pipe end on a descriptor >= 10 (the old one is closed)."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


@dataclass
class Page:
    """One loaded page: its requests, a screenshot, and a way to ask it things."""

    url: str
    requests: list[str]
    failed: dict[str, str]
    png: bytes
    width: int
    height: int
    browser: "Chromium" = field(repr=False)
    session: str = field(repr=False)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        reply = self.browser.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            self.session,
        )
        result = reply["result"]
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")


class Chromium:
    """A headless Chromium process spoken to over --remote-debugging-pipe."""

    def __init__(self, binary: str | None = None, width: int = 1100) -> None:
        self.binary = binary or chromium_path()
        self.width = width
        self.process: subprocess.Popen | None = None
        self.profile = tempfile.mkdtemp(prefix="pika-chromium-")
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict] = []

    def __enter__(self) -> Self:
        commands_r, commands_w = os.pipe()
        replies_r, replies_w = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4: a small
        # Python moves the pipe ends there (from fds >= 10, clear of 3 and 4),
        # then becomes Chromium.
        commands_r, replies_w = _above_ten(commands_r), _above_ten(replies_w)
        self.process = subprocess.Popen(
            [sys.executable, "-c", TRAMPOLINE, str(commands_r), str(replies_w)]
            + [self.binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            pass_fds=(commands_r, replies_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_r)
        os.close(replies_w)
        self._write, self._read = commands_w, replies_r
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.process and self.process.poll() is None:
                try:
                    self._send("Browser.close", {})
                    self.process.wait(10)
                except (OSError, subprocess.TimeoutExpired):
                    self.process.kill()
                    self.process.wait(10)
        finally:
            os.close(self._write)
            os.close(self._read)
            shutil.rmtree(self.profile, ignore_errors=True)

    # -- protocol -----------------------------------------------------------------
    def _send(self, method: str, params: dict, session: str | None = None) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None):
        """Send one command and return its reply (events meanwhile are kept)."""
        wanted = self._send(method, params or {}, session)
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while True:
            message = self._receive(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message
            self.events.append(message)

    def _wait_event(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        for index, event in enumerate(self.events):
            if event.get("method") == method and event.get("sessionId") == session:
                return self.events.pop(index)
        while True:
            message = self._receive(deadline)
            if message.get("method") == method and message.get("sessionId") == session:
                return message
            self.events.append(message)

    # -- pages --------------------------------------------------------------------
    def new_session(self) -> str:
        """A new tab, attached; returns its session id."""
        target = self.call("Target.createTarget", {"url": "about:blank"})
        target_id = target["result"]["targetId"]
        attached = self.call(
            "Target.attachToTarget", {"targetId": target_id, "flatten": True}
        )
        return attached["result"]["sessionId"]

    def open(self, url: str, height: int = 900, screenshot: bool = True) -> Page:
        """Load `url` in a new tab; return its requests and a full-page screenshot."""
        session = self.new_session()
        self.call("Network.enable", {}, session)
        self.call("Page.enable", {}, session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": self.width,
                "height": height,
                "deviceScaleFactor": 1,
                "mobile": False,
            },
            session,
        )
        self.call("Page.navigate", {"url": url}, session)
        self._wait_event("Page.loadEventFired", session)
        metrics = self.call("Page.getLayoutMetrics", {}, session)["result"]
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        width, full = int(size["width"]), int(size["height"])
        shot = {"result": {"data": ""}}
        if screenshot:
            shot = self.call(
                "Page.captureScreenshot",
                {
                    "format": "png",
                    "captureBeyondViewport": True,
                    "clip": {
                        "x": 0,
                        "y": 0,
                        "width": width,
                        "height": full,
                        "scale": 1,
                    },
                },
                session,
            )
        mine = [event for event in self.events if event.get("sessionId") == session]
        urls = {
            event["params"]["requestId"]: event["params"]["request"]["url"]
            for event in mine
            if event.get("method") == "Network.requestWillBeSent"
        }
        failed = {
            urls.get(event["params"]["requestId"], "?"): event["params"].get(
                "blockedReason"
            )
            or event["params"].get("errorText", "")
            for event in mine
            if event.get("method") == "Network.loadingFailed"
        }
        png = base64.b64decode(shot["result"]["data"])
        return Page(url, list(urls.values()), failed, png, width, full, self, session)

    def count_colors(
        self,
        png: bytes,
        boxes: list[dict],
        colors: dict[str, tuple[int, int, int]],
        tolerance: int = 24,
    ) -> list[dict]:
        """Per box ({x, y, width, height}): how many pixels are close to each colour.

        Close: the red, green and blue differences add up to less than `tolerance`.
        """
        session = self.new_session()
        data = "data:image/png;base64," + base64.b64encode(png).decode()
        script = """
        (async () => {
          const image = new Image();
          image.src = DATA;
          await image.decode();
          const canvas = document.createElement('canvas');
          canvas.width = image.width; canvas.height = image.height;
          const context = canvas.getContext('2d');
          context.drawImage(image, 0, 0);
          const colors = COLORS, boxes = BOXES;
          return boxes.map(box => {
            const x = Math.max(0, Math.floor(box.x)), y = Math.max(0, Math.floor(box.y));
            const w = Math.min(image.width - x, Math.ceil(box.width));
            const h = Math.min(image.height - y, Math.ceil(box.height));
            const counts = {};
            for (const name in colors) counts[name] = 0;
            if (w <= 0 || h <= 0) return counts;
            const pixels = context.getImageData(x, y, w, h).data;
            for (let i = 0; i < pixels.length; i += 4) {
              for (const name in colors) {
                const [r, g, b] = colors[name];
                if (Math.abs(pixels[i] - r) + Math.abs(pixels[i + 1] - g)
                    + Math.abs(pixels[i + 2] - b) < TOLERANCE) counts[name] += 1;
              }
            }
            return counts;
          });
        })()
        """
        for name, value in (  # the image last: its base64 could hold a placeholder
            ("COLORS", json.dumps(colors)),
            ("BOXES", json.dumps(boxes)),
            ("TOLERANCE", str(int(tolerance))),
            ("DATA", json.dumps(data)),
        ):
            script = script.replace(name, value)
        reply = self.call(
            "Runtime.evaluate",
            {"expression": script, "returnByValue": True, "awaitPromise": True},
            session,
        )
        return reply["result"]["result"]["value"]
