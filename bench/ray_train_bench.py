"""The final training on 1 process and on N Ray Train workers, on the pipeline's data (run
`dvc repro validate` first): training tokens/s, wall time and valid perplexity.

    python bench/ray_train_bench.py [--workers 1 2] [--tokens 1000000] [-S section.key=value ...]

Each configuration trains params.yaml's model and train sections (the search's pick is not put in)
with ``train.tokens`` and ``train.workers`` changed, in a process of its own: ``workers: 1`` is the
train stage's own loop in that process, more is ``seqlab.ray_train`` on a local Ray instance (its
start-up counted in the wall time, not in tokens/s, which is the rounds' own).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(workers: int, tokens: int, overrides: list[str]) -> dict:
    import yaml

    from seqlab.config import load_params
    from seqlab.determinism import fix_threads
    from seqlab.models import build, config_from_params
    from seqlab.scoring import load_eval_set
    from seqlab.training import fit
    from seqlab.training.lm import LanguageModelTask
    from seqlab.vocab import load_vocab

    changes = {"train.tokens": tokens, "train.eval_every": tokens // 2, "train.workers": workers}
    for item in overrides:
        key, _, value = item.partition("=")
        changes[key] = yaml.safe_load(value)  # as dvc exp run -S reads a value
    params = load_params(ROOT / "params.yaml", changes)
    vocab = load_vocab(ROOT / "data" / "vocab")
    config = config_from_params(params.model.model_dump(), len(vocab))
    train, valid = (load_eval_set(ROOT / "data" / "tokens", split, vocab) for split in ("train", "valid"))
    task = LanguageModelTask(train.segments.ids, valid.segments.ids, valid.scored, vocab.sha256)
    cfg = params.train
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        if workers == 1:
            fix_threads()
            import torch

            torch.manual_seed(cfg.seed)
            result = fit(build(config), task, cfg, work, "bench", progress=False)
        else:
            from seqlab.ray_train import fit_on_workers

            result = fit_on_workers(config, task, cfg, params.tune, work, "bench", progress=False)
    seconds = time.perf_counter() - started
    trained = sum(r.seconds for r in result.history)
    return {"workers": workers, "tokens": result.history[-1].tokens, "tokens_per_s": result.history[-1].tokens / trained,
            "wall_s": seconds, "valid_ppl": result.best_valid_ppl}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("-S", dest="overrides", action="append", default=[], help="section.key=value")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.tokens, args.overrides)))
        return
    print(f"{'workers':>7} {'tokens':>10} {'tokens/s':>9} {'wall s':>7} {'valid ppl':>9}")
    for workers in args.workers:
        command = [sys.executable, __file__, "--one", str(workers), "--tokens", str(args.tokens)]
        command += [x for o in args.overrides for x in ("-S", o)]
        out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(f"{row['workers']:>7} {row['tokens']:>10,} {row['tokens_per_s']:>9,.0f} {row['wall_s']:>7.1f} {row['valid_ppl']:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
