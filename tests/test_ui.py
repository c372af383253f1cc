"""The MLflow UI server: local only, and one clear line when it cannot start or no browser is there.
(The browser itself is exercised against a real pipeline in test_pipeline.py.)"""

import socket

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
