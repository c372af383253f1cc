"""Grapheme-to-phoneme side by side: Sequitur G2P (the joint-sequence n-gram model) trained and scored on
SeqLab's split, beside the encoder-decoders of the pipeline, and their decoding speed.

    python bench/g2p_bench.py speed                 greedy and beam-5 words/s of models/seq2seq/*/ on the test words
    python bench/g2p_bench.py sequitur [--order 5]  Sequitur trained on data/seq2seq/train.tsv (ramp-up to --order,
                                                    valid.tsv as its held-out set), scored on the test words

Run `dvc repro` first (the pairs and seq2seq stages). Sequitur is installed with
`pip install sequitur-g2p` (its `g2p.py`); training to order 5 on the whole dictionary takes hours on
2 cores, `--limit N` trains on the first N train words for a quicker look. Scores follow the
pipeline's convention: each test word decoded once, scored against its closest pronunciation.

PyPI's newest wheel (1.0.1668.30) crashes in training with ``'SwigPyObject' object has no attribute
'thisown'`` under current SWIG runtimes; upstream fixed it by no longer setting ``thisown``
(sequitur-g2p PR #111, not released). The bench runs ``g2p.py`` with a copy of ``sequitur.py`` with
those assignments removed, first on its path; the installed package is not modified. Without
``thisown`` the wrapped objects are never freed (upstream's PR #112 fixes that in the compiled
extension): on the whole dictionary order-1 training grew past 23 GB, so use ``--limit`` here.
"""

from __future__ import annotations

import argparse
import json
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


def patched_sequitur(folder: Path) -> dict:
    """An environment whose ``sequitur`` module is the installed one without its ``thisown`` assignments."""
    import importlib.util
    import os
    import re

    spec = importlib.util.find_spec("sequitur")
    if spec is None or spec.origin is None:
        sys.exit("sequitur not found: pip install sequitur-g2p")
    source = Path(spec.origin).read_text(encoding="utf-8")
    folder.mkdir()
    (folder / "sequitur.py").write_text(re.sub(r"^(\s*)\w+\.thisown = True$", r"\1pass", source, flags=re.M), encoding="utf-8")
    return {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def sequitur(order: int, limit: int | None) -> None:
    g2p = shutil.which("g2p.py")
    if g2p is None:
        sys.exit("g2p.py not found: pip install sequitur-g2p")
    test = references(read_pairs(DATA / "test.tsv"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = patched_sequitur(tmp / "patched")
        lexicon(read_pairs(DATA / "train.tsv"), tmp / "train.lex", limit)
        lexicon(read_pairs(DATA / "valid.tsv"), tmp / "valid.lex")
        (tmp / "test.words").write_text("".join(f"{''.join(word)}\n" for word in test), encoding="utf-8")
        print(f"Sequitur G2P, {len(test):,} test words; {'first ' + str(limit) if limit else 'all'} train words")
        print(f"{'order':>5} {'train s':>8} {'apply s':>8} {'PER':>7} {'WER':>7} {'no answer':>10}")
        model = None
        for n in range(1, order + 1):
            started = time.perf_counter()
            command = [sys.executable, g2p, "--train", str(tmp / "train.lex"), "--devel", str(tmp / "valid.lex"),
                       "--write-model", str(tmp / f"model-{n}")]
            command += ["--model", str(model), "--ramp-up"] if model else []
            subprocess.run(command, check=True, capture_output=True, env=env)
            trained = time.perf_counter() - started
            model = tmp / f"model-{n}"
            started = time.perf_counter()
            out = subprocess.run([sys.executable, g2p, "--model", str(model), "--apply", str(tmp / "test.words")],
                                 check=True, capture_output=True, text=True, env=env).stdout
            applied = time.perf_counter() - started
            found = {}
            for line in out.splitlines():
                word, _, phones = line.partition("\t")
                found[tuple(word)] = tuple(phones.split())
            rates = error_rates([found.get(word, ()) for word in test], list(test.values()))  # no answer: scored as empty
            missing = sum(word not in found for word in test)
            print(f"{n:>5} {trained:>8.0f} {applied:>8.1f} {rates.token_error_rate:>7.2%} {rates.sequence_error_rate:>7.2%} {missing:>10,}",
                  flush=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("speed")
    peer = commands.add_parser("sequitur")
    peer.add_argument("--order", type=int, default=5)
    peer.add_argument("--limit", type=int, default=None, help="train on the first N train words")
    args = parser.parse_args()
    speed() if args.command == "speed" else sequitur(args.order, args.limit)


if __name__ == "__main__":
    main()
