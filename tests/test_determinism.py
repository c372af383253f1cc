"""fix_threads: the same bits from training on an idle machine and on one whose cores are all busy.

Each training runs in its own process (the thread settings are per process), a tiny LSTM language
model with a layer norm like the real one's: the layer norm's backward sums over rows in one chunk
per thread, so its bits depend on the intra-op thread count (the control test shows it), which is
what a load-dependent thread count would change.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

TRAIN = r'''
import ctypes, hashlib, json, os, sys
fix, threads = sys.argv[1], (int(sys.argv[2]) if len(sys.argv) > 2 else None)
returned = None
if fix == "before":  # the recommended use: before torch is imported
    from seqlab.determinism import fix_threads
    returned = fix_threads(threads)
import torch
from torch import nn
if fix == "after":  # torch (and OpenMP, which read OMP_DYNAMIC) already loaded
    from seqlab.determinism import fix_threads
    returned = fix_threads(threads)

torch.manual_seed(0)
V, E, H, B, T, STEPS = 1000, 64, 256, 32, 16, 12  # short: under load each step is slow
ids = torch.randint(0, V, (B, T * 8 + 1))
model = nn.ModuleDict({"embed": nn.Embedding(V, E), "rnn": nn.LSTM(E, H, batch_first=True),
                       "norm": nn.LayerNorm(H), "out": nn.Linear(H, V)})
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
for step in range(STEPS):
    x, y = ids[:, (step % 8) * T : (step % 8 + 1) * T], ids[:, (step % 8) * T + 1 : (step % 8 + 1) * T + 1]
    logits = model["out"](model["norm"](model["rnn"](model["embed"](x))[0]))
    loss = nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 0.25)
    opt.step()
digest = hashlib.sha256()
for name, value in model.state_dict().items():
    digest.update(name.encode())
    digest.update(value.contiguous().numpy().tobytes())

omp_dynamic = None  # OpenMP's dynamic adjustment in this (the training) thread, where libgomp can be found
with open("/proc/self/maps") as maps:
    gomp = sorted({line.split()[-1] for line in maps if os.path.basename(line.split()[-1]).startswith("libgomp")})
if gomp:
    omp_dynamic = ctypes.CDLL(gomp[0]).omp_get_dynamic()
print(json.dumps({"hash": digest.hexdigest(), "threads": torch.get_num_threads(), "returned": returned,
                  "omp_dynamic": omp_dynamic}))
'''


def train(tmp_path: Path, fix: str, threads: int | None = None, dynamic: bool = False) -> dict:
    """One training in a fresh process; ``dynamic``: with OMP_DYNAMIC and MKL_DYNAMIC on in its environment."""
    script = tmp_path / "train_tiny.py"
    script.write_text(TRAIN)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_DYNAMIC", "MKL_DYNAMIC")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    if dynamic:
        env.update(OMP_DYNAMIC="TRUE", MKL_DYNAMIC="TRUE")
    args = [sys.executable, str(script), fix, *([] if threads is None else [str(threads)])]
    done = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def unfixed(tmp_path_factory) -> dict:
    """Today's run: torch's defaults, fix_threads not called."""
    return train(tmp_path_factory.mktemp("unfixed"), "none")


def test_fix_threads_keeps_the_bits_of_a_default_run(tmp_path, unfixed):
    fixed = train(tmp_path, "before")
    assert fixed["returned"] == fixed["threads"] == unfixed["threads"]  # the default is torch's own
    assert fixed["hash"] == unfixed["hash"]  # models trained before fix_threads existed keep their hashes


def test_the_bits_depend_on_the_thread_count(tmp_path, unfixed):
    # the control: a thread count that changed with the load would change the hash the next test compares
    other = 1 if unfixed["threads"] > 1 else 2
    changed = train(tmp_path, "before", other)
    assert changed["returned"] == changed["threads"] == other
    assert changed["hash"] != unfixed["hash"]


def test_fix_threads_gives_the_same_bits_while_every_core_is_busy(tmp_path, unfixed):
    # busy loops on every core and one more; and dynamic threading switched on in the environment, which
    # OpenMP reads when torch loads it (here before fix_threads is called): with it on, GNU OpenMP sizes
    # its thread teams from the load average
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range((os.cpu_count() or 1) + 1)]
    try:
        loaded = train(tmp_path, "after", dynamic=True)
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()
    assert loaded["returned"] == loaded["threads"] == unfixed["threads"]
    if loaded["omp_dynamic"] is not None:  # torch's OpenMP is GNU's, as in the pip wheels
        assert loaded["omp_dynamic"] == 0
    assert loaded["hash"] == unfixed["hash"]


IDEMPOTENT = r"""
import threading
import pytest, torch
from seqlab.determinism import fix_threads
default = fix_threads()
assert default == torch.get_num_threads() and torch.are_deterministic_algorithms_enabled()
assert fix_threads() == default == torch.get_num_threads()
assert fix_threads(1) == 1 == torch.get_num_threads()
assert fix_threads() == default == torch.get_num_threads()  # the default stays the first call's
seen = []
worker = threading.Thread(target=lambda: seen.append((fix_threads(), torch.get_num_threads())))
worker.start()
worker.join()
assert seen == [(default, default)], seen
for bad in (0, -1, 1.5, True):
    with pytest.raises(ValueError):
        fix_threads(bad)
print("ok")
"""


def test_fix_threads_is_idempotent_and_per_thread(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-c", IDEMPOTENT], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
