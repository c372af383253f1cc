"""Grapheme-to-phoneme side by side: Sequitur G2P (the joint-sequence n-gram model) trained and scored on
SeqLab's split, beside the encoder-decoders of the pipeline, and their decoding speed.

    python bench/g2p_bench.py speed                 greedy and beam-5 words/s of models/seq2seq/*/ on the test words
    python bench/g2p_bench.py train [--set K=V ...]  training tokens/s of params.yaml's encoder-decoder in float32
                                                    and under bf16 autocast on the CPU (seq2seq_train.amp: cpu)
    python bench/g2p_bench.py side-by-side          the same model trained alone on every core against two copies
                                                    at once, half the cores each (the seq2seq stage's side_by_side)
    python bench/g2p_bench.py sequitur [--order 5]  Sequitur trained on data/seq2seq/train.tsv (ramp-up to --order,
                                                    valid.tsv as its held-out set), scored on the test words

Run `dvc repro` first (the pairs and seq2seq stages). Scores follow the pipeline's convention: each
test word decoded once, scored against its closest pronunciation; a test word Sequitur gives no
answer for is scored as an empty one. Each order's training reports its wall time and peak resident
memory; `--models DIR` keeps the models (and Sequitur's logs) in DIR, and a `model-N` already there
is scored as it is instead of trained again, so a long ramp-up can be stopped and continued.

Sequitur runs in its own environment: `--python PY` (or `SEQUITUR_PYTHON=PY`) names the Python of an
environment holding it, and the bench runs the `g2p.py` beside it. PyPI's newest wheel
(1.0.1668.30) does not do for the whole dictionary: under current SWIG runtimes training crashes with
``'SwigPyObject' object has no attribute 'thisown'``. Upstream fixed that in two steps that no release
carries: PR #111 stops setting ``thisown`` in ``sequitur.py``, PR #112 has SWIG hand the objects'
ownership to Python (``%newobject`` in ``sequitur.i``), without which they are never freed. Build
Sequitur with both (docs/benchmarks.md, G2P, says how) and name its Python. Given a Sequitur whose
``sequitur.py`` still sets ``thisown`` (the wheel, the default when neither is given), the bench
runs ``g2p.py`` with a copy of ``sequitur.py`` without those assignments, first on its path (the
installed package is not modified); that trains, but leaks: order 1 on the whole dictionary grew past
23 GB, so use `--limit N` (the first N train words) there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from seqlab.edit_rates import error_rates  # noqa: E402
from seqlab.pairs import read_pairs, references  # noqa: E402

DATA = ROOT / "data" / "seq2seq"


def lexicon(pairs, path: Path, limit: int | None = None) -> None:
    """Sequitur's lexicon: ``word phone phone ...`` per line (a word's variants on lines of their own)."""
    grouped = list(references(pairs).items())[:limit]
    path.write_text("".join(f"{''.join(word)} {' '.join(target)}\n" for word, targets in grouped for target in targets), encoding="utf-8")


THISOWN = re.compile(r"^(\s*)\w+\.thisown = True$", re.M)


def sequitur_env(python: str, folder: Path) -> tuple[Path, dict]:
    """``g2p.py`` beside ``python`` and the environment to run it in: as it is when that Sequitur has upstream's
    fixes, else with a copy of its ``sequitur.py`` without the ``thisown`` assignments first on its path."""
    g2p = Path(shutil.which(python) or python).parent / "g2p.py"
    if shutil.which(python) is None or not g2p.is_file():
        sys.exit(f"{g2p} not found: --python (or SEQUITUR_PYTHON) names the Python of an environment holding Sequitur "
                 "(docs/benchmarks.md, G2P, says how to build it with upstream's fixes)")
    found = subprocess.run([python, "-c", "import importlib.util as u; s = u.find_spec('sequitur'); print(s.origin if s else '')"],
                           capture_output=True, text=True)
    if found.returncode or not found.stdout.strip():
        sys.exit(f"sequitur not importable by {python}: install Sequitur in that environment")
    source = Path(found.stdout.strip()).read_text(encoding="utf-8")
    if not THISOWN.search(source):
        return g2p, dict(os.environ)
    print("this Sequitur sets thisown (no upstream fix): run with those assignments removed, which never frees "
          "its objects; on more than a few thousand words use a Sequitur built with upstream's fixes")
    folder.mkdir(exist_ok=True)
    (folder / "sequitur.py").write_text(THISOWN.sub(r"\1pass", source), encoding="utf-8")
    return g2p, {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def measured(command: list[str], env: dict, log: Path) -> tuple[float, float]:
    """Run ``command`` with its stdout and stderr to ``log``; its wall seconds and peak resident memory (GB)."""
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-15:])
        sys.exit(f"{tail}\n{' '.join(command)} failed (exit status {process.returncode}); its output: {log}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024**2  # ru_maxrss: KiB on Linux


def sequitur(order: int, limit: int | None, python: str, models: Path | None) -> None:
    test = references(read_pairs(DATA / "test.tsv"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = models or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        g2p, env = sequitur_env(python, Path(tmp) / "patched")
        lexicon(read_pairs(DATA / "train.tsv"), Path(tmp) / "train.lex", limit)
        train = Path(tmp) / "train.lex"
        if (folder / "train.lex").exists() and (folder / "train.lex").read_bytes() != train.read_bytes():
            sys.exit(f"{folder} holds models trained on other words (its train.lex differs): use another --models folder")
        train.replace(folder / "train.lex")
        lexicon(read_pairs(DATA / "valid.tsv"), folder / "valid.lex")
        (folder / "test.words").write_text("".join(f"{''.join(word)}\n" for word in test), encoding="utf-8")
        print(f"Sequitur G2P ({g2p}), {len(test):,} test words; {'first ' + str(limit) if limit else 'all'} train words")
        print(f"{'order':>5} {'train s':>8} {'peak GB':>8} {'apply s':>8} {'PER':>7} {'WER':>7} {'no answer':>10}")
        for n in range(1, order + 1):
            model = folder / f"model-{n}"
            if model.exists():
                trained, peak = "kept", ""
            else:
                command = [python, str(g2p), "--train", str(folder / "train.lex"), "--devel", str(folder / "valid.lex"),
                           "--write-model", str(folder / f"model-{n}.part")]
                command += ["--model", str(folder / f"model-{n - 1}"), "--ramp-up"] if n > 1 else []
                seconds, gigabytes = measured(command, env, folder / f"train-{n}.log")
                (folder / f"model-{n}.part").replace(model)
                trained, peak = f"{seconds:.0f}", f"{gigabytes:.2f}"
            applied, _ = measured([python, str(g2p), "--model", str(model), "--apply", str(folder / "test.words")],
                                  env, folder / f"test-{n}.out")
            found = {}
            for line in (folder / f"test-{n}.out").read_text(encoding="utf-8").splitlines():
                word, tab, phones = line.partition("\t")
                if tab:  # Sequitur's notes (a word it failed to convert) have no tab
                    found[tuple(word)] = tuple(phones.split())
            rates = error_rates([found.get(word, ()) for word in test], list(test.values()))  # no answer: scored as empty
            missing = sum(word not in found for word in test)
            print(f"{n:>5} {trained:>8} {peak:>8} {applied:>8.1f} {rates.token_error_rate:>7.2%} "
                  f"{rates.sequence_error_rate:>7.2%} {missing:>10,}", flush=True)
    for scores in sorted((ROOT / "models" / "seq2seq").glob("*/scores.json")):
        s = json.loads(scores.read_text())
        print(f"{s['model']:>24}: PER {s['test']['per']:.2%}  WER {s['test']['wer']:.2%}")


def speed() -> None:
    import torch

    from seqlab.determinism import fix_threads
    from seqlab.transduce import load_transducer, transduce

    fix_threads()
    words = list(references(read_pairs(DATA / "test.tsv")))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(words):,} test words, batches of 256")
    for folder in sorted((ROOT / "models" / "seq2seq").glob("*/model.pt")):
        loaded = load_transducer(folder.parent)
        for beam in (1, 5):
            started = time.perf_counter()
            transduce(loaded.model, words, loaded.source_vocab, loaded.target_vocab, loaded.max_length, beam)
            seconds = time.perf_counter() - started
            print(f"{folder.parent.name:>12} beam {beam}: {len(words) / seconds:,.0f} words/s", flush=True)


def _trainer(changes: list[str]):
    """The params.yaml encoder-decoder (with ``changes``, ``section.key=value``) and its train batches
    in a seeded order: (params, config, batches, order)."""
    import torch
    import yaml

    from seqlab.config import load_params
    from seqlab.models import Seq2SeqConfig
    from seqlab.training.seq2seq import batches
    from seqlab.transduce import encode_pairs
    from seqlab.vocab import PAIR_SPECIALS, load_vocab

    overrides = {key: yaml.safe_load(value) for key, value in (change.split("=", 1) for change in changes)}
    params = load_params(ROOT / "params.yaml", overrides)
    source_vocab, target_vocab = (load_vocab(DATA / f"{side}_vocab", PAIR_SPECIALS) for side in ("source", "target"))
    data = batches(encode_pairs(read_pairs(DATA / "train.tsv"), source_vocab, target_vocab), params.seq2seq_train.batch_size)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).tolist()
    return params, Seq2SeqConfig(len(source_vocab), len(target_vocab), **params.seq2seq.model_dump()), data, order


def _steps(model, optimizer, data, order, start: int, count: int, amp, smoothing: float) -> float:
    """``count`` training steps from ``order[start]``; target tokens/s."""
    import torch

    from seqlab.models.neural_lm import autocast
    from seqlab.training.seq2seq import teacher_forced_loss

    tokens, started = 0, time.perf_counter()
    for i in range(count):
        with autocast(torch.device("cpu"), amp):
            loss, n = teacher_forced_loss(model, data[order[(start + i) % len(order)]], smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        tokens += n
    return tokens / (time.perf_counter() - started)


def train_speed(changes: list[str], rounds: int, steps: int) -> None:
    """The params.yaml encoder-decoder (with ``changes``) trained on the train pairs in float32 and
    under CPU bf16 autocast, one model each, stepped in turn in blocks of ``steps`` (this machine's
    speed drifts within seconds, so each block of one has a block of the other beside it); median
    target tokens/s of each and of their ratio."""
    import statistics

    import torch

    from seqlab.determinism import fix_threads
    from seqlab.models import build_seq2seq
    from seqlab.models.neural_lm import native_bf16

    fix_threads()
    params, config, data, order = _trainer(changes)
    cfg = params.seq2seq_train
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {native_bf16()}; "
          f"{config.rnn}, attention {config.attention}, batch {cfg.batch_size}; {rounds} rounds of {steps} steps each")
    runs = {}
    for name, amp in (("float32", False), ("bf16", "cpu")):
        torch.manual_seed(cfg.seed)
        model = build_seq2seq(config).train()
        runs[name] = (model, torch.optim.Adam(model.parameters(), cfg.lr), amp, [])
    for model, optimizer, amp, _ in runs.values():
        _steps(model, optimizer, data, order, 0, 5, amp, cfg.label_smoothing)  # warm-up
    for position in range(0, rounds * steps, steps):
        for model, optimizer, amp, speeds in runs.values():
            speeds.append(_steps(model, optimizer, data, order, position, steps, amp, cfg.label_smoothing))
    for name, (_, _, _, speeds) in runs.items():
        print(f"{name:>8}: {statistics.median(speeds):9,.0f} target tokens/s (median; {min(speeds):,.0f} to {max(speeds):,.0f})")
    ratios = [b / f for f, b in zip(runs["float32"][3], runs["bf16"][3])]
    print(f"bf16 / float32: {statistics.median(ratios):.3f}x (median of {rounds} side-by-side blocks; "
          f"{min(ratios):.3f} to {max(ratios):.3f})")


def _timed_job(changes: list[str], threads: int, steps: int, start_at: float) -> float:
    """One model of the params.yaml configuration on ``threads`` threads: ``steps`` steps from the
    wall-clock time ``start_at`` (so jobs started apart step together); target tokens/s."""
    import torch

    from seqlab.determinism import fix_threads
    from seqlab.models import build_seq2seq

    fix_threads(threads)
    params, config, data, order = _trainer(changes)
    cfg = params.seq2seq_train
    torch.manual_seed(cfg.seed)
    model = build_seq2seq(config).train()
    optimizer = torch.optim.Adam(model.parameters(), cfg.lr)
    _steps(model, optimizer, data, order, 0, 5, cfg.amp, cfg.label_smoothing)  # warm-up
    time.sleep(max(0.0, start_at - time.time()))
    return _steps(model, optimizer, data, order, 5, steps, cfg.amp, cfg.label_smoothing)


def side_by_side_speed(changes: list[str], rounds: int, steps: int) -> None:
    """What the seq2seq stage's side-by-side training buys: the params.yaml model (its amp setting)
    trained alone on every core, against two copies trained at once in processes of their own with
    half the cores each (``seqlab.processes``, as the stage runs them), in turn ``rounds`` times;
    the pair's summed tokens/s over the one's, median of the rounds."""
    import statistics

    from seqlab.determinism import fix_threads
    from seqlab.processes import plan, side_by_side

    cores = fix_threads()
    processes, threads = plan(2, "auto", cores)
    print(f"{cores} cores; alone: 1 model on {cores} threads; side by side: 2 models, {processes} processes of {threads} thread(s); "
          f"{steps} steps each, {rounds} rounds")
    alone, pairs = [], []
    for _ in range(rounds):
        alone += side_by_side(_timed_job, [(changes, cores, steps, 0.0)], 1)
        start_at = time.time() + 30  # both processes loaded and warmed up by then
        pairs.append(side_by_side(_timed_job, [(changes, threads, steps, start_at)] * 2, processes))
        print(f"  alone {alone[-1]:,.0f} target tokens/s; side by side {pairs[-1][0]:,.0f} + {pairs[-1][1]:,.0f} = "
              f"{sum(pairs[-1]):,.0f}", flush=True)
    ratios = [sum(pair) / one for one, pair in zip(alone, pairs)]
    print(f"side by side / alone: {statistics.median(ratios):.3f}x the tokens/s (median of {rounds}; "
          f"{min(ratios):.3f} to {max(ratios):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("speed")
    trainer = commands.add_parser("train")
    trainer.add_argument("--set", dest="changes", action="append", default=[], metavar="KEY=VALUE",
                         help="a params.yaml change, e.g. seq2seq.attention=dot (repeatable)")
    trainer.add_argument("--rounds", type=int, default=10)
    trainer.add_argument("--steps", type=int, default=20)
    pair = commands.add_parser("side-by-side")
    pair.add_argument("--set", dest="changes", action="append", default=[], metavar="KEY=VALUE")
    pair.add_argument("--rounds", type=int, default=3)
    pair.add_argument("--steps", type=int, default=300)
    peer = commands.add_parser("sequitur")
    peer.add_argument("--order", type=int, default=5)
    peer.add_argument("--limit", type=int, default=None, help="train on the first N train words")
    peer.add_argument("--python", default=os.environ.get("SEQUITUR_PYTHON", sys.executable),
                      help="the Python of the environment holding Sequitur (default: $SEQUITUR_PYTHON, else this one)")
    peer.add_argument("--models", type=Path, default=None,
                      help="keep the models here; a model-N already here is scored, not trained again")
    args = parser.parse_args()
    if args.command == "speed":
        speed()
    elif args.command == "train":
        train_speed(args.changes, args.rounds, args.steps)
    elif args.command == "side-by-side":
        side_by_side_speed(args.changes, args.rounds, args.steps)
    else:
        sequitur(args.order, args.limit, args.python, args.models)


if __name__ == "__main__":
    main()
