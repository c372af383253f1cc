"""The data's own limit: the whole pipeline on corpora drawn from known Markov chains, every model's
test cross-entropy beside the chain's (the lowest any model can expect on those tokens).

    python bench/markov_bench.py                       # every setting below
    python bench/markov_bench.py --setting 40x2-1M     # one of them
    python bench/markov_bench.py --setting 40x2-300k -S tune.num_samples=4

Each setting is a fresh project (this repository's dvc.yaml, params.yaml, pipelines and src) in a
temporary folder with the chain's corpus as ``data.source: directory`` and ``tokenize.pattern: \\S+``;
every other param is params.yaml's, so the numbers are what a user with such data gets from
``dvc repro``. ``-S section.key=value`` changes a param for every setting. Needs the project's
environment (``make setup``); a setting takes about as long as ``make repro``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from seqlab.synthetic import Chain, write_corpus  # noqa: E402

# name: (chain, train tokens); valid and test hold a tenth of it each
SETTINGS = {
    "40x2-1M": (Chain(states=40, order=2, support=8, alpha=0.5, mean_length=30, seed=0), 1_000_000),
    "40x2-300k": (Chain(states=40, order=2, support=8, alpha=0.5, mean_length=30, seed=0), 300_000),
    "20x3-1M": (Chain(states=20, order=3, support=4, alpha=0.5, mean_length=30, seed=0), 1_000_000),
    "100x2-1M": (Chain(states=100, order=2, support=20, alpha=1.0, mean_length=30, seed=0), 1_000_000),
}


def project(folder: Path, chain: Chain, train_tokens: int, changes: dict) -> dict[str, float]:
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, folder / name)
    for name in ("pipelines", "src", "configs"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    truth = write_corpus(chain, folder / "data" / "corpus", train_tokens, train_tokens // 10)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["data"].update(source="directory", path="data/corpus")
    params["tokenize"]["pattern"] = r"\S+"
    for dotted, value in changes.items():
        section, key = dotted.split(".", 1)
        params[section][key] = value
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=folder, check=True)
    return truth


def table(folder: Path, truth: float) -> list[tuple[str, float, float]]:
    """(model, test nats per token, gap to the chain) for every model, best first."""
    rows = []
    for scores in sorted(folder.glob("models/**/scores.json")):
        summary = json.loads(scores.read_text())
        rows.append((summary["model"], summary["test"]["xent_nats"], summary["test"]["xent_nats"] / truth - 1))
    return sorted(rows, key=lambda row: row[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", action="append", choices=sorted(SETTINGS), help="default: all")
    parser.add_argument("-S", dest="changes", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    changes = {key: yaml.safe_load(value) for key, value in (c.split("=", 1) for c in args.changes)}
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "GX_ANALYTICS_ENABLED": "false"}
    for name in args.setting or list(SETTINGS):
        chain, train_tokens = SETTINGS[name]
        with tempfile.TemporaryDirectory(prefix=f"seqlab-markov-{name}-") as tmp:
            folder = Path(tmp)
            truth = project(folder, chain, train_tokens, changes)
            started = time.perf_counter()
            result = subprocess.run(["dvc", "repro"], cwd=folder, env=env, capture_output=True, text=True)
            minutes = (time.perf_counter() - started) / 60
            if result.returncode:
                print(f"{name}: dvc repro failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
                continue
            tuned = json.loads((folder / "models" / "tune" / "best_config.json").read_text())["overrides"]
            trained = json.loads((folder / "models" / "neural" / "scores.json").read_text())
            print(f"\n{name}: {chain.states} states, order {chain.order}, {chain.support} successors per context, "
                  f"{train_tokens:,} train tokens; dvc repro {minutes:.1f} min")
            print(f"tuned: {tuned}; {trained['tokens_seen']:,} tokens seen, best round {trained['best_round']} "
                  f"of {trained['rounds_run']}")
            print(f"{'model':18} {'test nats/token':>16} {'vs the chain':>13}")
            print(f"{'the chain':18} {truth['test']:>16.4f} {'':>13}")
            for model, nats, gap in table(folder, truth["test"]):
                print(f"{model:18} {nats:>16.4f} {gap:>+13.2%}")


if __name__ == "__main__":
    main()
