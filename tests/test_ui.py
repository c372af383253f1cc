"""The MLflow UI server: local only, and one clear line when it cannot start or no browser is there.
(The browser itself is exercised against a real pipeline in test_pipeline.py.)"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from seqlab import ui
from seqlab.errors import SeqLabError


def test_a_port_in_use_stops_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind((ui.HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SeqLabError, match=rf"^127.0.0.1:{port} is in use \(another MLflow UI\?\); choose another --port$"):
            ui.serve(f"sqlite:///{tmp_path / 'mlflow.db'}", port, tmp_path / "server.log", timeout=60)


def test_a_port_left_in_time_wait_by_a_stopped_server_is_free():
    """A server that closed its connections first leaves them in TIME_WAIT on its port for a minute;
    restarting the UI at once must not read that as another server."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((ui.HOST, 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection((ui.HOST, port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server's side closes first: its end waits in TIME_WAIT
            client.recv(1)
        assert not ui.port_free(port)  # still listening
    assert ui.port_free(port)


def test_a_server_that_cannot_start_is_one_line(tmp_path):
    with socket.socket() as probe:
        probe.bind((ui.HOST, 0))
        port = probe.getsockname()[1]
    with pytest.raises(SeqLabError, match=rf"^mlflow server on 127.0.0.1:{port} stopped at start: "):
        ui.serve("nonsense://nowhere", port, tmp_path / "server.log", timeout=60)


def test_no_browser_is_one_line(monkeypatch, tmp_path):
    monkeypatch.delenv("SEQLAB_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SeqLabError, match=r"^chromium not found: install it \(apt-get install chromium\) or set SEQLAB_CHROMIUM$"):
        ui.chromium()


def test_the_runs_page_is_sorted_by_test_perplexity():
    url = ui.runs_url("http://127.0.0.1:5000", "3")
    assert url.startswith("http://127.0.0.1:5000/#/experiments/3/runs?searchFilter=metrics.test_ppl%20%3E%200")
    assert url.endswith("&orderByKey=metrics.%60test_ppl%60&orderByAsc=true")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((ui.HOST, 0))
        return probe.getsockname()[1]


def serving(port: int) -> list[psutil.Process]:
    """The processes of an ``mlflow server`` on ``port``, workers included."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        line = process.info["cmdline"] or []
        if "--port" in line and str(port) in line and any("mlflow" in part or "uvicorn" in part for part in line):
            found.append(process)
    return found


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 0)])
def test_kill_or_ctrl_c_stops_the_server_with_the_ui(tmp_path, signum, status):
    """`kill` (SIGTERM) of `seqlab ui` or a Ctrl-C at its terminal (SIGINT to its process group):
    the server and its workers go, the port is free again, and no traceback is printed."""
    (tmp_path / "mlruns").mkdir()
    port = free_port()
    seqlab = Path(sys.executable).parent / "seqlab"
    child = subprocess.Popen([str(seqlab), "ui", "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        started = ""
        while f"MLflow UI on http://127.0.0.1:{port}" not in started and child.poll() is None:
            started += child.stdout.readline()  # the server's log lines come first, on the same terminal
        assert serving(port), started
        if signum == signal.SIGTERM:
            child.send_signal(signum)  # the process only, as `kill PID` does
        else:
            os.killpg(child.pid, signum)  # the terminal's foreground group
        output, _ = child.communicate(timeout=120)  # the end of output: every process writing to it is gone (ui.stop allows the group 30 s)
        assert child.returncode == status and "Traceback" not in output and "CancelledError" not in output, output
        deadline = time.monotonic() + 10
        while serving(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not serving(port)
        assert ui.port_free(port)  # `seqlab ui` can start on it again
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
