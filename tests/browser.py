"""A headless Chromium (Debian's chromium) driven over the DevTools pipe, for the tests of the pages
pixelwise makes: the serve page and the evaluation report."""

import json
import os
import shutil
import subprocess
import time

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class DevTools:
    """Chrome DevTools Protocol over --remote-debugging-pipe (fds 3 and 4): no websocket library needed."""

    def __init__(self, url, profile):
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()

        def fds():  # in the child: the pipe ends as fds 3 and 4, via high numbers so neither overwrites the other
            high = os.dup(to_child), os.dup(from_child)
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-pipe",
                 f"--user-data-dir={profile}", "--window-size=1280,900", "--hide-scrollbars"]
        self.process = subprocess.Popen([CHROMIUM, *flags, url], preexec_fn=fds, pass_fds=(3, 4),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self._buffer, self._id, self.session = b"", 0, None
        self.events: list[dict] = []

    def attach(self, seconds=30):
        """Attach to the browser's first page, so that later calls act on it."""
        deadline = time.monotonic() + seconds
        while not (pages := [t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page"]):
            assert time.monotonic() < deadline, "chromium opened no page"
            time.sleep(0.1)
        self.session = self.send("Target.attachToTarget", targetId=pages[0]["targetId"], flatten=True)["sessionId"]

    def send(self, method, session=True, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._read, 1 << 16)
                assert chunk, "chromium closed the pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if "method" in reply:  # an event (console messages, exceptions) while waiting for the reply
                self.events.append(reply)
            if reply.get("id") == self._id:
                assert "error" not in reply, reply["error"]
                return reply["result"]

    def evaluate(self, expression):
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression, seconds=60):
        deadline = time.monotonic() + seconds
        while not (value := self.evaluate(expression)):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.1)
        return value

    def close(self):
        try:
            self.send("Browser.close", session=False)
        except (AssertionError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
