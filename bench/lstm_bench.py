"""Neural LM speed, memory and quality on the pipeline's data (run `dvc repro` first).

    python bench/lstm_bench.py speed [--rounds 10]   training tokens/s per attention score and output layer, peak memory
                                                     (each in its own process); then the Transformer against the default
                                                     model, and the default against the full softmax, each pair's processes
                                                     stepped in turn: the median ratio over the rounds
    python bench/lstm_bench.py profile               where a training step's time goes: the default model and the Transformer,
                                                     operators by their own CPU time over 5 steps
    python bench/lstm_bench.py attention [--rounds 5]  the Transformer's attention (forward and backward of one layer at the
                                                     speed cases' sizes): the fused kernel against the scores written out
    python bench/lstm_bench.py generate              generation tokens/s at prompt 10 and 500 (models/neural/model.pt)
    python bench/lstm_bench.py quality [--profile default|long] [--variant dot|none|transformer] [-S key=value ...]
                                                     train one model like the train stage and print its perplexities
                                                     beside modified Kneser-Ney order 5 on the same test tokens

The default profile is params.yaml's model and train sections; ``long`` is a wider model trained
longer (CPU, under an hour on 2 cores). ``-S section.key=value`` overrides any key, as
``dvc exp run -S`` would.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
LONG = {"model.embed_dim": 400, "model.hidden_dim": 512, "model.dropout_embed": 0.15, "model.dropout_rnn": 0.3,
        "model.dropout_out": 0.3, "model.memory": 100, "model.cutoffs": [2000, 6000], "train.tokens": 10 * 920_000, "train.bptt": 70}
VARIANTS = {"dot": {}, "none": {"model.attention": "none"}, "transformer": {"model.kind": "transformer"}}


def settings(overrides: dict):
    """(ModelConfig, TrainParams, vocab, splits) from params.yaml with dotted overrides."""
    from seqlab.config import load_params
    from seqlab.models import config_from_params
    from seqlab.scoring import load_eval_set
    from seqlab.vocab import load_vocab

    params = load_params(ROOT / "params.yaml", overrides)
    vocab = load_vocab(ROOT / "data" / "vocab")
    config = config_from_params(params.model.model_dump(), len(vocab))
    splits = {s: load_eval_set(ROOT / "data" / "tokens", s, vocab) for s in ("train", "valid", "test")}
    return config, params.train, vocab, splits


def _trainer(overrides: dict, windows: int = 30):
    """(model, train_step, tokens per step): the model of ``overrides`` trained as the trainer trains
    it (its Adam, clipping, state carried across windows), step ``i`` on window ``i % windows`` of train."""
    from seqlab.models import build
    from seqlab.training.loop import adam

    torch.manual_seed(0)
    config, cfg, _, splits = settings(overrides)
    model = build(config)
    optimizer = adam(model, cfg.lr)  # the trainer's optimiser
    B, T = cfg.batch_size, cfg.bptt
    ids = torch.from_numpy(splits["train"].segments.ids[: B * T * windows + 1].copy())
    x, y = ids[:-1].view(B, -1), ids[1:].view(B, -1)
    state = model.init_state(B)

    def train_step(step: int) -> None:
        nonlocal state
        window = slice(step % windows * T, (step % windows + 1) * T)
        features, state, _ = model(x[:, window], {k: v.detach() for k, v in state.items()})
        loss = -model.output.target_log_probs(features, y[:, window]).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        optimizer.step()

    return model, train_step, B * T


def _speed_one(overrides: dict, queue, profiled: bool = False) -> None:
    from seqlab.determinism import fix_threads
    from seqlab.models import count_parameters

    fix_threads()  # as the trainer runs: fixed threads, denormals flushed
    model, train_step, tokens = _trainer(overrides)
    for step in range(5):  # warm-up steps are not timed
        train_step(step)
    started = time.perf_counter()
    for step in range(5, 25):
        train_step(step)
    rate = 20 * tokens / (time.perf_counter() - started)
    table = None
    if profiled:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            for step in range(25, 30):  # the windows after the timed ones
                train_step(step)
        table = profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=48)
    queue.put((count_parameters(model), rate, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, table))


def _stepped(overrides: dict, connection) -> None:
    """One case in its own process, a training step each time ``connection`` asks, its time sent back."""
    from seqlab.determinism import fix_threads

    fix_threads()
    _, train_step, tokens = _trainer(overrides)
    for step in range(5):  # warm-up steps are not timed
        train_step(step)
    connection.send(tokens)
    step = 5
    while connection.recv():
        started = time.perf_counter()
        train_step(step)
        connection.send(time.perf_counter() - started)
        step += 1


def alternated(cases: dict[str, dict], rounds: int, steps: int = 20) -> dict[str, list[float]]:
    """Each case's training tokens/s per round: every case in a process of its own (as it trains),
    the processes stepped in turn, a step of each ``steps`` times a round, so that the shared machine's
    speed, which moves a rate by a fifth within seconds, changes under every case alike."""
    context = multiprocessing.get_context("spawn")
    connections, processes = {}, []
    for name, overrides in cases.items():
        connections[name], theirs = context.Pipe()
        processes.append(context.Process(target=_stepped, args=(overrides, theirs)))
        processes[-1].start()
    tokens = {name: connection.recv() for name, connection in connections.items()}
    rates = {name: [] for name in cases}
    for _ in range(rounds):
        spent = dict.fromkeys(cases, 0.0)
        for _ in range(steps):
            for name, connection in connections.items():
                connection.send(True)
                spent[name] += connection.recv()
        for name in cases:
            rates[name].append(steps * tokens[name] / spent[name])
    for connection in connections.values():
        connection.send(False)
    for process in processes:
        process.join()
    return rates


def _in_process(overrides: dict, profiled: bool = False) -> tuple:
    """_speed_one in a fresh process, so no case inherits another's allocations or threads."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_speed_one, args=(overrides, queue, profiled))
    process.start()
    result = queue.get()
    process.join()
    return result


def profile() -> None:
    for name, overrides in (("dot, adaptive (default)", {}), ("transformer, adaptive (matched)", {"model.kind": "transformer"})):
        parameters, rate, _, table = _in_process(overrides, profiled=True)
        print(f"{name}: {parameters:,} parameters, {rate:,.0f} train tokens/s; 5 steps profiled after the timed ones\n{table}", flush=True)


def speed(rounds: int) -> None:
    cases = [
        ("dot, adaptive (default)", {}),
        ("none, adaptive", {"model.attention": "none"}),
        ("dot, full softmax", {"model.output": "full"}),
        ("none, full softmax", {"model.attention": "none", "model.output": "full"}),
        ("general, adaptive", {"model.attention": "general"}),
        ("additive, adaptive", {"model.attention": "additive"}),
        ("multihead, adaptive", {"model.attention": "multihead"}),
        ("transformer, adaptive (matched)", {"model.kind": "transformer"}),
    ]
    results = {}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch x bptt from params.yaml")
    print(f"{'model':34} {'parameters':>11} {'train tokens/s':>15} {'peak RSS MB':>12}")
    for name, overrides in cases:
        results[name] = _in_process(overrides)
        parameters, rate, peak, _ = results[name]
        print(f"{name:34} {parameters:>11,} {rate:>15,.0f} {peak:>12,.0f}", flush=True)
    rate = {name: r[1] for name, r in results.items()}
    print(f"attention / no attention (adaptive), one run each: {rate['dot, adaptive (default)'] / rate['none, adaptive']:.2f}x")
    # one run of each is not a ratio on a shared machine: its speed drifts by more than the models
    # differ, so the targets' ratios are taken with the two processes stepped in turn, round by round
    for top, bottom in (("transformer, adaptive (matched)", "dot, adaptive (default)"), ("dot, adaptive (default)", "dot, full softmax")):
        rates = alternated({name: dict(cases)[name] for name in (top, bottom)}, rounds)
        ratios = [t / b for t, b in zip(rates[top], rates[bottom])]
        for i, (t, b) in enumerate(zip(rates[top], rates[bottom]), 1):
            print(f"round {i}, stepped in turn: {top} {t:,.0f}, {bottom} {b:,.0f} tokens/s ({ratios[i - 1]:.3f}x)", flush=True)
        print(f"{top} / {bottom} over {rounds} rounds: median {statistics.median(ratios):.3f}x "
              f"(range {min(ratios):.3f}-{max(ratios):.3f}x)")


def attention(rounds: int, steps: int = 40) -> None:
    """One Transformer layer's attention, forward and backward, both ways ``attend`` can compute it,
    alternated ``rounds`` times in this process (``steps`` timed calls each after 5 untimed)."""
    from seqlab.determinism import fix_threads
    from seqlab.models import build
    from seqlab.models.transformer import attend

    fix_threads()
    torch.manual_seed(0)
    config, cfg, _, _ = settings({"model.kind": "transformer"})
    B, T, S, heads = cfg.batch_size, cfg.bptt, config.memory + cfg.bptt, config.heads
    bias = build(config).bias(T, S, "cpu")
    q, k, v = (torch.randn(B, heads, n, config.embed_dim // heads, requires_grad=True) for n in (T, S, S))
    grad = torch.randn(B, heads, T, config.embed_dim // heads)

    def timed(fused: bool) -> float:
        for step in range(5 + steps):
            if step == 5:
                started = time.perf_counter()
            attend(q, k, v, bias, fused)[0].backward(grad)
        return (time.perf_counter() - started) / steps * 1000

    print(f"batch {B}, {heads} heads, {T} queries, {S} keys, head width {config.embed_dim // heads}; "
          f"{torch.get_num_threads()} threads; ms per forward and backward")
    ratios = []
    for round_ in range(1, rounds + 1):
        fused, written = timed(True), timed(False)
        ratios.append(fused / written)
        print(f"round {round_}: fused {fused:.2f}, written out {written:.2f} ({ratios[-1]:.2f}x)", flush=True)
    print(f"fused / written out: median {statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}x)")


def generation(checkpoint: str, tokens: int) -> None:
    from seqlab.generate import generate
    from seqlab.loading import load
    from seqlab.tokenize import read_stream

    loaded = load(str(ROOT / checkpoint), ROOT / "data" / "vocab", ROOT / "data" / "tokens" / "tokenizer.json")
    text = " ".join(" ".join(line) for line in read_stream(ROOT / "data" / "tokens" / "test.txt"))
    for length in (10, 500):
        prompt = " ".join(text.split()[:length])
        best = None
        for seed in range(3):
            result = generate(loaded, prompt, tokens, temperature=0.8, top_k=40, seed=seed)
            best = result if best is None or result.tokens_per_s > best.tokens_per_s else best
        print(f"prompt {best.prompt_length:4d} tokens: read in {best.prompt_seconds * 1000:7.1f} ms; "
              f"{tokens} tokens generated at {best.tokens_per_s:6.0f} tokens/s (best of 3)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


def quality(profile: str, variant: str, extra: dict) -> None:
    from seqlab.models import build, count_parameters
    from seqlab.models.checkpoint import load_checkpoint
    from seqlab.models.neural_lm import NeuralLM
    from seqlab.scoring import score
    from seqlab.training import fingerprint, fit
    from seqlab.training.lm import LanguageModelTask

    overrides = {**(LONG if profile == "long" else {}), **VARIANTS[variant], **extra}
    config, cfg, vocab, splits = settings(overrides)
    torch.manual_seed(cfg.seed)
    model = build(config)
    print(f"{profile} profile, {variant}: {count_parameters(model):,} parameters; overrides {overrides}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        task = LanguageModelTask(splits["train"].segments.ids, splits["valid"].segments.ids, splits["valid"].scored, vocab.sha256)
        result = fit(model, task, cfg, work, fingerprint(config.as_dict(), cfg.model_dump()))
        minutes = (time.perf_counter() - started) / 60
        best = load_checkpoint(Path(work) / "best.pt", vocab.sha256)
    scorer = NeuralLM(best, cfg.eval_batch_size, cfg.eval_window)
    scores = {s: score(scorer, splits[s]) for s in ("valid", "test")}
    mkn = json.loads((ROOT / "models" / "ngram" / "mkn-5" / "scores.json").read_text())
    assert mkn["test"]["fingerprint"] == scores["test"].fingerprint, "not the same test tokens as the n-gram models"
    below = 1 - scores["test"].ppl / mkn["test"]["ppl"]
    print(f"trained {minutes:.1f} min, {len(result.history)} rounds, {result.history[-1].tokens:,} tokens (best round "
          f"{result.best_round}), {sum(r.tokens_per_s for r in result.history) / len(result.history):,.0f} tokens/s on average")
    print(f"{'model':28} {'valid ppl':>10} {'test ppl':>10}")
    print(f"{'ngram-mkn-5':28} {mkn['valid']['ppl']:>10.2f} {mkn['test']['ppl']:>10.2f}")
    print(f"{profile + ' ' + variant:28} {scores['valid'].ppl:>10.2f} {scores['test'].ppl:>10.2f}   ({below:.1%} below mkn-5 on test, "
          f"{scores['test'].tokens} test tokens)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("speed").add_argument("--rounds", type=int, default=10, help="rounds of each compared pair stepped in turn")
    sub.add_parser("profile")
    sub.add_parser("attention").add_argument("--rounds", type=int, default=5)
    gen = sub.add_parser("generate")
    gen.add_argument("--model", default="models/neural/model.pt")
    gen.add_argument("--tokens", type=int, default=200)
    q = sub.add_parser("quality")
    q.add_argument("--profile", choices=["default", "long"], default="default")
    q.add_argument("--variant", choices=list(VARIANTS), default="dot")
    q.add_argument("-S", dest="sets", action="append", default=[], metavar="section.key=value")
    args = parser.parse_args()
    if not (ROOT / "data" / "vocab" / "vocab.tsv").exists():
        sys.exit("error: data/vocab not found; run `dvc repro` first")
    if args.what == "speed":
        speed(args.rounds)
    elif args.what == "profile":
        profile()
    elif args.what == "attention":
        attention(args.rounds)
    elif args.what == "generate":
        generation(args.model, args.tokens)
    else:
        quality(args.profile, args.variant, {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.sets)})


if __name__ == "__main__":
    main()
