"""The data's own limit: the whole pipeline on corpora drawn from known Markov chains, every model's
test cross-entropy beside the chain's (the lowest any model can expect on those tokens).

    python bench/markov_bench.py                       # every setting below
    python bench/markov_bench.py --setting 40x2-1M     # one of them
    python bench/markov_bench.py --setting 40x2-300k -S tune.num_samples=4
    python bench/markov_bench.py --target ngram --target train \
        -S tune.space_file=configs/tune_state_sequences.json -S train.tokens=8000000 -S train.eval_every=1000000
                                                       # the state-sequence profile: the n-grams and the tuned model only
    python bench/markov_bench.py --setting 40x2-1M --keep /tmp/markov   # keep the project, then explain the gap
    python bench/markov_bench.py --setting 40x2-1M --explain /tmp/markov/40x2-1M   # explain a kept project's gap
    python bench/markov_bench.py --setting 40x2-1M --hybrid /tmp/markov/40x2-1M    # the hybrid of a project run with --target
    python bench/markov_bench.py --setting 40x2-1M --oracle /tmp/markov/40x2-1M    # the chain's own estimate from the counts

Each setting is a fresh project (this repository's dvc.yaml, params.yaml, pipelines and src) in a
temporary folder with the chain's corpus as ``data.source: directory`` and ``tokenize.pattern: \\S+``;
every other param is params.yaml's, so the numbers are what a user with such data gets from
``dvc repro evaluate`` (every language model, the hybrid and the leaderboard; the sequence-to-sequence
task is left out). ``-S section.key=value`` changes a param for every setting; ``--target STAGE``
runs those stages and what they depend on instead (``dvc repro STAGE ...``). Needs the project's
environment (``make setup``); a setting takes about as long as ``make repro``.

``--explain`` splits the neural model's excess over the chain on valid (the mean KL divergence from
the chain's next-state distribution to the model's) into three parts: the mass the model puts on
successors the chain never takes; the divergence of the model's prediction averaged over every
position with the same chain context (what remains if the model read only the chain's own
context); and the rest, the divergence that comes from predictions moving with states older than
the chain's order (learnt from the training sequences, absent from the chain).

``--hybrid`` prints what the ``hybrid`` stage gives (``hybrid.ngram: best``) in a kept project that
ran ``--target train``, with its tuned model as the neural part: the baselines are left out.

``--oracle`` prints the test cross-entropy of the chain's own posterior mean given a kept project's
train counts, with each context's successors, the end's probability and the Dirichlet concentration
known: a bound no model of the counts can expect to pass, below the n-grams.
"""

from __future__ import annotations

import argparse
import contextlib
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
        nats = summary["test"]["xent_nats"]  # None: a token of zero probability (an unsmoothed MLE)
        nats = float("inf") if nats is None else nats
        rows.append((summary["model"], nats, nats / truth - 1))
    return sorted(rows, key=lambda row: row[1])


def explain(folder: Path, chain: Chain, tokens: int = 60_000) -> dict[str, float]:
    """The neural model's (``models/neural/model.pt``) excess over the chain on the first ``tokens``
    valid tokens, read as one stream with the state carried, split as the module's docstring says."""
    import numpy as np
    import torch

    from seqlab.models.checkpoint import load_checkpoint
    from seqlab.scoring import load_eval_set
    from seqlab.vocab import load_vocab

    vocab = load_vocab(folder / "data" / "vocab")
    ids = load_eval_set(folder / "data" / "tokens", "valid", vocab).segments.ids[: tokens + 1]
    model = load_checkpoint(folder / "models" / "neural" / "model.pt", vocab.sha256).eval()
    width, names = chain.states + 1, vocab.decode(range(len(vocab)))
    to_chain = np.zeros((len(vocab), width))  # vocabulary entry -> chain symbol (states, then the end)
    for i, name in enumerate(names):
        if name == "</s>":
            to_chain[i, chain.states] = 1
        elif name[:1] == "s" and name[1:].isdigit():
            to_chain[i, int(name[1:])] = 1
    pieces, state = [], model.init_state(1)
    with torch.no_grad():
        stream = torch.from_numpy(ids[:-1].astype(np.int64))[None]
        for start in range(0, stream.shape[1], 128):
            features, state, _ = model(stream[:, start : start + 128], state)
            pieces.append(model.output.log_probs(features[0]).double().exp().numpy())
    predicted = np.concatenate(pieces) @ to_chain  # (positions, width): the model's next-symbol distribution
    symbol, table, start = to_chain.argmax(axis=1), chain.table, vocab.index["<s>"]
    contexts, rows, targets, context = [], [], [], []
    for t in range(1, len(ids)):
        if ids[t] == start:  # <s> is never scored
            continue
        if ids[t - 1] == start:  # a sequence starts from a fresh context
            context = [chain.states] * chain.order
        contexts.append(chain.context_index(context))
        rows.append(t - 1)
        targets.append(int(symbol[ids[t]]))
        context = [*context[1:], targets[-1]]
    contexts, q = np.array(contexts), predicted[rows]
    p = table[contexts]
    possible = p > 0

    def divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:  # KL(p || q) per row, over p's support
        ratio = np.log(p, out=np.zeros_like(p), where=p > 0) - np.log(np.maximum(q, 1e-300))
        return (p * ratio).sum(axis=-1)

    kl = divergence(p, q)
    used, inverse = np.unique(contexts, return_inverse=True)
    mean_q = np.zeros((len(used), width))
    np.add.at(mean_q, inverse, q)
    counts = np.bincount(inverse)
    mean_kl = divergence(table[used], mean_q / counts[:, None]) @ counts / len(contexts)
    return {"positions": len(contexts), "model_nats": float(-np.log(q[np.arange(len(q)), targets]).mean()),
            "chain_nats": float(-np.log(p[np.arange(len(p)), targets]).mean()), "kl": float(kl.mean()),
            "impossible_mass": float(np.where(possible, 0, q).sum(axis=1).mean()), "kl_of_context_mean": float(mean_kl),
            "kl_from_older_states": float(kl.mean() - mean_kl)}


def print_explanation(folder: Path, chain: Chain) -> None:
    e = explain(folder, chain)
    print(f"the neural model on {e['positions']:,} valid tokens: {e['model_nats']:.4f} nats/token against the chain's "
          f"{e['chain_nats']:.4f}; KL from the chain {e['kl']:.4f} nats/token, of which {e['kl_of_context_mean']:.4f} is the "
          f"prediction averaged per chain context and {e['kl_from_older_states']:.4f} moves with older states; "
          f"{e['impossible_mass']:.2%} of its mass on successors the chain never takes")


def hybrid(folder: Path) -> tuple[str, float, float, float, dict[str, float]]:
    """What the ``hybrid`` stage gives with ``hybrid.ngram: best`` in a kept project, its tuned model
    (``models/neural``) as the neural part: the n-gram model chosen, the neural weight, test nats per
    token of the mix and of the n-gram model alone, and each estimator's mix on valid (nats per token)."""
    from seqlab.hybrid import Interpolated, Remembered, best_mix
    from seqlab.loading import open_model
    from seqlab.scoring import best_on_valid, load_eval_set, score
    from seqlab.vocab import load_vocab

    vocab = load_vocab(folder / "data" / "vocab")
    valid, test = (load_eval_set(folder / "data" / "tokens", split, vocab) for split in ("valid", "test"))
    neural = Remembered(open_model(folder / "models" / "neural" / "model.pt", vocab))
    folders = sorted((folder / "models" / "ngram").iterdir())  # <estimator>-<order>
    by_estimator = {f.name.rsplit("-", 1)[0]: [] for f in folders}
    for f in folders:
        by_estimator[f.name.rsplit("-", 1)[0]].append(f)
    ngrams = {summary["model"]: (f, summary) for f, summary in map(best_on_valid, by_estimator.values())}  # as the stage picks
    opened = {name: Remembered(open_model(f / "model.npz", vocab)) for name, (f, _) in ngrams.items()}
    chosen, weights, _, candidates = best_mix(neural.log_probs(valid.segments)[valid.scored],
                                              {name: model.log_probs(valid.segments)[valid.scored] for name, model in opened.items()})
    mixed = score(Interpolated([neural, opened[chosen]], weights), test).xent_nats
    return chosen, float(weights[0]), mixed, ngrams[chosen][1]["test"]["xent_nats"], candidates


def print_hybrid(folder: Path, truth: float) -> None:
    chosen, weight, nats, alone, candidates = hybrid(folder)
    print(f"hybrid (hybrid.ngram: best): the tuned model x {weight:.4f} + {chosen} x {1 - weight:.4f}: test {nats:.5f} nats/token "
          f"({nats / truth - 1:+.3%} vs the chain; {chosen} alone {alone:.5f}, {alone / truth - 1:+.3%}); each estimator's mix on valid: "
          + ", ".join(f"{name} {x:.4f}" for name, x in sorted(candidates.items(), key=lambda item: item[1])))


def oracle(folder: Path, chain: Chain) -> float:
    """Test nats per token of the chain's Dirichlet posterior mean given a kept project's train counts,
    knowing what no model knows: each context's successors, the end's probability and the
    concentration. How far below the n-grams a model of those counts could go."""
    import numpy as np

    table, width = chain.table, chain.states + 1

    def positions(split: str):
        for line in (folder / "data" / "corpus" / f"{split}.txt").read_text(encoding="utf-8").splitlines():
            context = [chain.states] * chain.order
            for symbol in [int(token[1:]) for token in line.split()] + [chain.states]:
                yield chain.context_index(context), symbol
                context = [*context[1:], symbol]

    counts = np.zeros_like(table)
    np.add.at(counts, tuple(np.array(list(positions("train"))).T), 1)
    successors = table > 0
    successors[:, chain.states] = False
    end = table[:, chain.states]
    posterior = np.where(successors, counts + chain.alpha, 0.0)
    posterior *= ((1 - end) / posterior.sum(axis=1))[:, None]
    posterior[:, chain.states] = end
    contexts, symbols = np.array(list(positions("test"))).T
    return float(-np.log(posterior[contexts, symbols]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", action="append", choices=sorted(SETTINGS), help="default: all")
    parser.add_argument("-S", dest="changes", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--target", action="append", default=[], metavar="STAGE", help="dvc repro these stages (default: evaluate)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep each setting's project in DIR/<setting> and explain its gap")
    parser.add_argument("--explain", type=Path, metavar="PROJECT", help="only explain the gap of a kept project (of --setting)")
    parser.add_argument("--hybrid", type=Path, metavar="PROJECT", help="only print the hybrid of a kept project's tuned model")
    parser.add_argument("--oracle", type=Path, metavar="PROJECT", help="only print the chain's own estimate from a kept project's counts")
    args = parser.parse_args()
    if args.explain:
        print_explanation(args.explain, SETTINGS[(args.setting or ["40x2-1M"])[0]][0])
        return
    if args.oracle:
        chain, train_tokens = SETTINGS[(args.setting or ["40x2-1M"])[0]]
        with tempfile.TemporaryDirectory() as tmp:
            truth = write_corpus(chain, tmp, train_tokens, train_tokens // 10)["test"]
        nats = oracle(args.oracle, chain)
        print(f"the chain's posterior mean from the train counts, its successors known: test {nats:.4f} nats/token "
              f"({nats / truth - 1:+.2%} vs the chain's {truth:.4f})")
        return
    if args.hybrid:
        chain, train_tokens = SETTINGS[(args.setting or ["40x2-1M"])[0]]
        with tempfile.TemporaryDirectory() as tmp:  # the chain's truth: its corpus drawn again, the same seeds
            truth = write_corpus(chain, tmp, train_tokens, train_tokens // 10)["test"]
        print_hybrid(args.hybrid, truth)
        return
    changes = {key: yaml.safe_load(value) for key, value in (c.split("=", 1) for c in args.changes)}
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "GX_ANALYTICS_ENABLED": "false"}
    for name in args.setting or list(SETTINGS):
        chain, train_tokens = SETTINGS[name]
        kept = contextlib.nullcontext(args.keep / name) if args.keep else None
        with kept or tempfile.TemporaryDirectory(prefix=f"seqlab-markov-{name}-") as tmp:
            folder = Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            truth = project(folder, chain, train_tokens, changes)
            started = time.perf_counter()
            targets = args.target or ["evaluate"]  # the language models' stages (the seq2seq task needs pairs)
            result = subprocess.run(["dvc", "repro", *targets], cwd=folder, env=env, capture_output=True, text=True)
            minutes = (time.perf_counter() - started) / 60
            if result.returncode:
                print(f"{name}: dvc repro failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
                continue
            tuned = json.loads((folder / "models" / "tune" / "best_config.json").read_text())["overrides"]
            trained = json.loads((folder / "models" / "neural" / "scores.json").read_text())
            print(f"\n{name}: {chain.states} states, order {chain.order}, {chain.support} successors per context, "
                  f"{train_tokens:,} train tokens; dvc repro {' '.join(targets)} {minutes:.1f} min")
            print(f"tuned: {tuned}; {trained['tokens_seen']:,} tokens seen, best round {trained['best_round']} "
                  f"of {trained['rounds_run']}")
            print(f"{'model':18} {'test nats/token':>16} {'vs the chain':>13}")
            print(f"{'the chain':18} {truth['test']:>16.4f} {'':>13}")
            for model, nats, gap in table(folder, truth["test"]):
                print(f"{model:18} {nats:>16.4f} {gap:>+13.2%}")
            if args.keep:
                print_explanation(folder, chain)


if __name__ == "__main__":
    main()
