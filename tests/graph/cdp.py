"""Drive headless Chromium over the DevTools protocol on a pipe, with the stdlib only.

``--remote-debugging-pipe`` makes Chromium read protocol messages from file descriptor 3
and write replies to 4, each a JSON object ended by a NUL byte. That needs no websocket
client and no port, and lets a test send real (trusted) mouse events through
``Input.dispatchMouseEvent``, which Chromium hit-tests like a user's click.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# The machine may have no network; these keep Chromium from trying to reach it.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]


def find_chromium() -> str | None:
    """Path of a Chromium (or Chrome) executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


_TRAMPOLINE = """
import os, sys
reader, writer = int(sys.argv[1]), int(sys.argv[2])
os.dup2(reader, 3)
os.dup2(writer, 4)
os.close(reader)
os.close(writer)
os.execv(sys.argv[3], sys.argv[3:])
"""


def _above_4(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 5)
    os.close(fd)
    return moved


class ProtocolError(Exception):
    """Chromium answered a command with an error, or did not answer in time."""


class Browser:
    """One headless Chromium process and its protocol pipe."""

    def __init__(self, executable: str, profile: Path, timeout: float = 20.0) -> None:
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        to_child, self._write_fd = os.pipe()
        self._read_fd, from_child = os.pipe()
        # Lift the child's ends above 4, so that moving one onto fd 3 cannot clobber the other.
        to_child, from_child = (_above_4(fd) for fd in (to_child, from_child))
        # A tiny Python trampoline moves the pipe ends to fds 3 and 4, where Chromium expects
        # them (a shell redirection would do, but dash cannot name fds above 9).
        command = [
            sys.executable,
            "-c",
            _TRAMPOLINE,
            str(to_child),
            str(from_child),
            executable,
            *FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.process = subprocess.Popen(
            command,
            pass_fds=(to_child, from_child),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own process group, so that a hung browser is ended with all its helpers.
            start_new_session=True,
        )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next_id = 0

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> Any:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise ProtocolError(f"{method}: {reply['error']}")
                return reply["result"]
            if "method" in reply:
                self.events.append(reply)

    def open(self, url: str) -> Page:
        """Open ``url`` in a new tab and wait until it has loaded."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, session)
        self.call("Runtime.enable", session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        page.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")
        return page

    def close(self) -> None:
        with contextlib.suppress(ProtocolError, OSError):
            self.call("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        os.close(self._write_fd)
        os.close(self._read_fd)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self._read_fd], [], [], max(remaining, 0))
            if not ready:
                raise ProtocolError("Chromium did not answer in time")
            chunk = os.read(self._read_fd, 1 << 16)
            if not chunk:
                raise ProtocolError("Chromium closed the protocol pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        reply: dict[str, Any] = json.loads(raw)
        return reply


class Page:
    """One tab, attached through a flat protocol session."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def evaluate(self, expression: str) -> Any:
        """Evaluate ``expression`` in the page and return its value (JSON-serialisable)."""
        result = self.browser.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True},
            session=self.session,
        )
        if "exceptionDetails" in result:
            raise ProtocolError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, condition: str) -> None:
        deadline = time.monotonic() + self.browser.timeout
        while not self.evaluate(f"!!({condition})"):
            if time.monotonic() > deadline:
                raise ProtocolError(f"timed out waiting for {condition}")
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        """Click the centre of the element ``selector`` finds, as a real mouse would."""
        x, y = self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            " el.scrollIntoView({block: 'center', inline: 'center'});"
            " const r = el.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        for kind, button in (
            ("mouseMoved", "none"),
            ("mousePressed", "left"),
            ("mouseReleased", "left"),
        ):
            self.browser.call(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": button, "clickCount": 1},
                session=self.session,
            )

    def exceptions(self) -> list[dict[str, Any]]:
        """Uncaught script exceptions this page has reported."""
        return [
            event
            for event in self.browser.events
            if event.get("sessionId") == self.session
            and event["method"] == "Runtime.exceptionThrown"
        ]
