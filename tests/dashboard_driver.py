"""Drive the dashboard in a real headless Chromium: shared by the browser test and the
dashboard benchmark (``bench/bench_dashboard.py``).

``serve`` starts ``streamlit run app/streamlit_app.py`` on a free local port, ``open_page``
launches Debian's ``chromium`` through Playwright, and :class:`Activity` tells when the
app has finished a run.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Chromium as root on a machine without outside network: no sandbox, no background traffic.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000

# In the page: time from the key going down to the first DOM change of the metrics table's
# text, measured by the browser's own clock (no test-driver round trips counted).
_ARM_RERENDER_CLOCK = """() => {
  const table = () => document.querySelector('[data-testid="stTable"]');
  const before = table().innerText;
  window.__rerenderMs = undefined;
  let pressedAt;
  document.addEventListener('keydown', () => { pressedAt = performance.now(); },
                            {capture: true, once: true});
  const observer = new MutationObserver(() => {
    if (pressedAt !== undefined && table() && table().innerText !== before) {
      window.__rerenderMs = performance.now() - pressedAt;
      observer.disconnect();
    }
  });
  observer.observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"{url}/_stcore/health did not answer ok within {timeout_s:.0f} s")


@contextmanager
def serve(log_file: Path, script_args: Sequence[str] = ()) -> Iterator[tuple[str, subprocess.Popen]]:
    """A dashboard server on a free port, its output in ``log_file``: yields (url, process)."""
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", "app/streamlit_app.py",
               "--server.port", str(port), "--server.address", "127.0.0.1",
               "--server.headless", "true", "--server.fileWatcherType", "none",
               "--browser.gatherUsageStats", "false"]
    if script_args:
        command += ["--", *script_args]
    with open(log_file, "wb") as log:
        server = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, server)
            yield url, server
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@contextmanager
def open_page(chromium: str, timeout_ms: int = TIMEOUT_MS):
    """A fresh page in headless ``chromium`` (the executable's path), downloads allowed."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1500, "height": 1100},
                                          accept_downloads=True)
            context.set_default_timeout(timeout_ms)
            yield context.new_page()
        finally:
            browser.close()


class Activity:
    """When the app last sent or received a websocket frame: quiet means every run is over."""

    def __init__(self, page) -> None:
        self.page = page
        self.last_frame_at = time.monotonic()
        page.on("websocket", self._watch)

    def _watch(self, socket) -> None:
        socket.on("framereceived", self._seen)
        socket.on("framesent", self._seen)

    def _seen(self, _payload) -> None:
        self.last_frame_at = time.monotonic()

    def wait_quiet(self, quiet_s: float = 0.5) -> None:
        """Wait until no script runs (no running indicator) and no frame came for ``quiet_s``."""
        running = self.page.get_by_test_id("stStatusWidget")
        while time.monotonic() - self.last_frame_at < quiet_s or running.count():
            self.page.wait_for_timeout(50)  # lets Playwright deliver the frame events
        exceptions = self.page.get_by_test_id("stException")
        assert exceptions.count() == 0, exceptions.first.inner_text()

    def go_to(self, title: str) -> None:
        """Open the page called ``title`` from the sidebar and wait until it has run."""
        self.page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
        self.page.get_by_role("heading", name=title, level=1).wait_for()
        self.wait_quiet()

    def run_search(self, budget: int, timeout_ms: int) -> str:
        """Run a search of ``budget`` candidates on the Pareto page; return its status line."""
        page = self.page
        field = page.get_by_label("candidates to evaluate")
        field.fill(str(budget))
        field.press("Enter")
        page.get_by_role("button", name="Run search").click()
        label = page.get_by_text(f"Evaluated {budget} candidates in")
        failed = page.get_by_test_id("stException").or_(page.get_by_text("Search failed"))
        label.or_(failed).first.wait_for(timeout=timeout_ms)
        assert failed.count() == 0, failed.first.inner_text()
        text = label.inner_text()
        self.wait_quiet()
        return text

    def time_slider_moves(self, keys: Sequence[str]) -> list[float]:
        """Press each key on the Tune page's first weight slider; per key, the milliseconds
        until the metrics table shows new numbers."""
        thumb = self.page.get_by_test_id("stSlider").first.get_by_role("slider")
        thumb.focus()
        timings_ms = []
        for key in keys:
            self.page.evaluate(_ARM_RERENDER_CLOCK)
            thumb.press(key)
            timings_ms.append(
                self.page.wait_for_function("() => window.__rerenderMs").json_value())
            self.wait_quiet()
        return timings_ms
