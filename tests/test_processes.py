"""Jobs side by side in processes of their own: the cores shared out, results in order, the first
failure stopping the rest, and no worker outliving its stage."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from seqlab.errors import SeqLabError
from seqlab.processes import plan, side_by_side


@pytest.mark.parametrize("jobs, wanted, cores, expected", [
    (2, "auto", 2, (2, 1)),   # the default on 2 cores: attention and none, a thread each
    (3, "auto", 2, (2, 1)),   # a third model waits for a free process
    (1, "auto", 16, (1, 16)),
    (3, "auto", 8, (3, 2)),
    (2, 1, 2, (1, 2)),        # one after another, every core each
    (2, 4, 16, (2, 8)),       # never more processes than jobs
    (4, "auto", 3, (3, 1)),
])
def test_plan_shares_the_cores_out_evenly(jobs, wanted, cores, expected):
    assert plan(jobs, wanted, cores) == expected


def whoami(name: str) -> tuple[str, int, int]:
    return name, os.getpid(), os.getppid()


def test_jobs_run_in_processes_of_their_own_and_come_back_in_order():
    found = side_by_side(whoami, [("a",), ("b",), ("c",)], processes=2)
    assert [name for name, _, _ in found] == ["a", "b", "c"]
    assert all(pid != os.getpid() and parent == os.getpid() for _, pid, parent in found)
    here = side_by_side(whoami, [("a",), ("b",)], processes=1)  # one process: here, in order
    assert [(name, pid) for name, pid, _ in here] == [("a", os.getpid()), ("b", os.getpid())]


def fail_once_started(marker: str, message: str) -> None:
    deadline = time.monotonic() + 60
    while not Path(marker).exists() and time.monotonic() < deadline:  # the other job is under way
        time.sleep(0.05)
    raise SeqLabError(message)


def run_until_stopped(marker: str) -> None:
    Path(marker).write_text("started")
    try:
        time.sleep(120)
    except KeyboardInterrupt:
        Path(marker).write_text("interrupted")  # a stage's clean-up (its run marked KILLED, its outputs put back) runs
        raise


def job(kind: str, marker: str) -> None:
    if kind == "fail":
        fail_once_started(marker, "params.yaml: seq2seq_baselines.x: broken")
    else:
        run_until_stopped(marker)


def test_the_first_failure_stops_the_other_jobs_and_is_raised(tmp_path):
    marker = str(tmp_path / "long.txt")
    started = time.monotonic()
    with pytest.raises(SeqLabError, match="params.yaml: seq2seq_baselines.x: broken"):
        side_by_side(job, [("long", marker), ("fail", marker)], processes=2)
    assert time.monotonic() - started < 60  # not the long job's two minutes
    assert Path(marker).read_text() == "interrupted"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_worker_dies_with_its_stage(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from seqlab.processes import side_by_side
        from test_processes import write_pid_and_wait

        if __name__ == "__main__":
            side_by_side(write_pid_and_wait, [({str(tmp_path / 'a.pid')!r},), ({str(tmp_path / 'b.pid')!r},)], processes=2)
    """))
    stage = subprocess.Popen([sys.executable, str(script)])
    pids = []
    try:
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:
            pids = [int(f.read_text()) for f in tmp_path.glob("*.pid") if f.read_text()]
            time.sleep(0.1)
        assert len(pids) == 2
        stage.send_signal(signal.SIGKILL)  # kill -9: no clean-up of its own
        stage.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in pids)
    finally:
        stage.kill()
        for pid in pids:  # none should be left; if one is, it goes with the test
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def write_pid_and_wait(path: str) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(120)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
