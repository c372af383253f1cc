"""The MLflow UI: a server on 127.0.0.1 over the project's tracking store, and a look at it through a
headless browser (the system's Chromium driven by Playwright; nothing is downloaded).

``seqlab ui`` serves it; ``seqlab ui --screenshot docs/mlflow-runs.png`` saves what a person sees:
every model run of the experiment sorted by ``test_ppl``, each family's runs lined up under the same
metric names, and the registered models with the ``champion`` alias.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from seqlab.errors import SeqLabError

HOST = "127.0.0.1"  # never all interfaces: the store holds models and data hashes


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:``port`` now. Bound as the server binds it
    (SO_REUSEADDR), so connections a stopped server left in TIME_WAIT do not count as a server."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
            probe.listen()
        except OSError:
            return False
    return True


def serve(tracking_uri: str, port: int, log: str | Path | None = None, timeout: float = 90.0,
          options: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start ``mlflow server`` on 127.0.0.1:``port`` over ``tracking_uri`` (with more of its ``options``),
    its output to ``log`` (a file) or to this terminal; return once it answers."""
    if not port_free(port):  # a server already there would answer the health check for ours
        raise SeqLabError(f"{HOST}:{port} is in use (another MLflow UI?); choose another --port")
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
               "--host", HOST, "--port", str(port), "--workers", "1", *options]
    out = open(log, "w") if log else None
    try:
        # a session of its own: a Ctrl-C at the terminal reaches this process, which stops the server
        # (and the workers it forks) as one group, instead of each of them dying with a traceback
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT if out else None, start_new_session=True)
    finally:
        if out:
            out.close()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                last = (Path(log).read_text().strip().splitlines() or ["no output"])[-1] if log else f"exit status {server.returncode}"
                raise SeqLabError(f"mlflow server on {HOST}:{port} stopped at start: {last}")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as answer:
                    if answer.status == 200 and server.poll() is None:
                        return server
            except OSError:
                time.sleep(0.5)
        raise SeqLabError(f"mlflow server on {HOST}:{port} did not answer within {timeout:.0f} s")
    except BaseException:  # a Ctrl-C or SIGTERM while it starts, too
        stop(server)
        raise


def stop(server: subprocess.Popen) -> None:
    """Stop the server and every process of its group: SIGTERM, then SIGKILL after 30 s."""
    for signum, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
        try:
            os.killpg(server.pid, signum)
        except ProcessLookupError:  # the group is gone already
            pass
        try:
            server.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # workers that outlived the server still hold the port
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def chromium() -> str:
    """The browser: ``SEQLAB_CHROMIUM``, else Debian's ``chromium`` on the PATH."""
    path = os.environ.get("SEQLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise SeqLabError("chromium not found: install it (apt-get install chromium) or set SEQLAB_CHROMIUM")
    return path


@dataclass
class Seen:
    runs: str  # the text of the runs page, sorted by test_ppl
    models: str  # the text of the registered models page


def runs_url(base: str, experiment_id: str) -> str:
    """The experiment's runs that have a test perplexity, best first."""
    return (f"{base}/#/experiments/{experiment_id}/runs?searchFilter={quote('metrics.test_ppl > 0')}"
            f"&orderByKey={quote('metrics.`test_ppl`')}&orderByAsc=true")


COLUMNS = ("valid_ppl", "test_ppl", "test_xent_bits", "family")  # the same names in every family's runs


def look(base: str, experiment_id: str, wait_for: str, screenshot: str | Path | None = None, timeout_ms: int = 60_000) -> Seen:
    """Open the runs page and the registered models page in headless Chromium, wait until
    ``wait_for`` shows on the runs page, show the ``COLUMNS`` there, and return both pages' text;
    ``screenshot`` saves the runs page."""
    from playwright.sync_api import Error, sync_playwright

    from seqlab.io import atomic_path

    executable = chromium()
    with sync_playwright() as playwright:
        browser = None
        try:
            browser = playwright.chromium.launch(executable_path=executable, headless=True)
            page = browser.new_page(viewport={"width": 1900, "height": 900})
            page.goto(runs_url(base, experiment_id))
            page.get_by_text(wait_for, exact=True).first.wait_for(timeout=timeout_ms)
            close = page.get_by_role("button", name="Close")  # the assistant side panel, if it opened
            if close.count():
                close.first.click()
            page.get_by_role("button", name="Columns", exact=True).first.click()
            for column in COLUMNS:
                page.get_by_text(column, exact=True).first.click()
            page.keyboard.press("Escape")
            page.get_by_role("button", name="Toggle sidebar").click()
            page.wait_for_timeout(1000)
            runs = page.inner_text("body")
            shot = page.screenshot() if screenshot else None
            page.goto(f"{base}/#/models")
            page.get_by_text("champion").first.wait_for(timeout=timeout_ms)
            seen = Seen(runs, page.inner_text("body"))
        except Error as err:  # no browser, or the page never showed what it should: one line, not a traceback
            raise SeqLabError(f"{base}: the MLflow UI did not show the expected page: {str(err).splitlines()[0]}") from None
        finally:
            if browser is not None:
                browser.close()
    if shot is not None:  # written only once both pages were seen
        with atomic_path(screenshot) as tmp:
            tmp.write_bytes(shot)
    return seen
