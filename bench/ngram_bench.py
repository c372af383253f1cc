"""N-gram speed and memory on the default Shakespeare corpus (word tokens, min_freq 2).

Prints: build time of modified Kneser-Ney at order 5 (count + estimate, best of 3) and the peak
memory of a process that does only that; scoring throughput; and NLTK's KneserNeyInterpolated at
order 3 against SeqLab's interpolated KN at order 3, build + scoring the test split (NLTK is
installed into the environment if missing).

    python bench/ngram_bench.py [--nltk-test-tokens N]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import multiprocessing
import resource
import subprocess
import sys
import time


from seqlab.corpus import load_shakespeare
from seqlab.ngram import Segments, count, estimate
from seqlab.tokenize import WordTokenizer, tokenize_lines
from seqlab.vocab import BOS, EOS, UNK, build_vocab

VALID, TEST = ["julius-caesar", "twelfth-night"], ["macbeth", "the-merchant-of-venice"]


def data():
    corpus = load_shakespeare(VALID, TEST)
    tokenizer = WordTokenizer()
    tokens = {split: tokenize_lines(tokenizer, lines) for split, lines in corpus.splits.items()}
    vocab = build_vocab(tokens["train"], min_freq=2)
    return tokens, vocab


def build_once(order: int, estimator: str, queue) -> None:
    tokens, vocab = data()
    bos, eos = vocab.index[BOS], vocab.index[EOS]
    train = Segments.from_sentences([vocab.encode(s) for s in tokens["train"]], bos, eos)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    estimate(estimator, count(train, order, len(vocab)), len(vocab), bos)
    queue.put((time.perf_counter() - started, baseline / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def measure_build(order: int, estimator: str) -> tuple[float, float, float]:
    context = multiprocessing.get_context("spawn")
    runs = []
    for _ in range(3):
        queue = context.Queue()
        process = context.Process(target=build_once, args=(order, estimator, queue))
        process.start()
        runs.append(queue.get())
        process.join()
    return min(r[0] for r in runs), max(r[1] for r in runs), max(r[2] for r in runs)


def nltk_kn3(tokens, vocab, limit: int | None):
    if importlib.util.find_spec("nltk") is None:  # installed on first use
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "nltk"], check=True)
    from nltk.lm import KneserNeyInterpolated
    from nltk.lm.preprocessing import padded_everygram_pipeline

    known = set(vocab.tokens)
    unk = lambda sentence: [w if w in known else UNK for w in sentence]  # noqa: E731
    train = [unk(s) for s in tokens["train"]]
    started = time.perf_counter()
    grams, words = padded_everygram_pipeline(3, train)
    model = KneserNeyInterpolated(3)
    model.fit(grams, words)
    build = time.perf_counter() - started
    started = time.perf_counter()
    scored, total = 0, 0.0
    for sentence in tokens["test"]:
        padded = ["<s>", "<s>"] + unk(sentence) + ["</s>"]
        for t in range(2, len(padded)):
            total += model.logscore(padded[t], padded[t - 2 : t])
            scored += 1
            if limit and scored >= limit:
                break
        if limit and scored >= limit:
            break
    return build, time.perf_counter() - started, scored, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nltk-test-tokens", type=int, default=2000, help="NLTK test tokens to time (0: all)")
    args = parser.parse_args()
    tokens, vocab = data()
    bos, eos = vocab.index[BOS], vocab.index[EOS]
    train = Segments.from_sentences([vocab.encode(s) for s in tokens["train"]], bos, eos)
    test = Segments.from_sentences([vocab.encode(s) for s in tokens["test"]], bos, eos)
    print(f"corpus: {len(train.ids):,} train positions (tokens + <s> + </s>), vocabulary {len(vocab):,}")

    seconds, base_mb, peak_mb = measure_build(5, "mkn")
    print(f"mkn order 5 build (count + estimate): {seconds:.2f} s best of 3; peak RSS {peak_mb:.0f} MB "
          f"(process before the build: {base_mb:.0f} MB)")

    model = estimate("mkn", count(train, 5, len(vocab)), len(vocab), bos)
    started = time.perf_counter()
    model.log_probs(train)
    rate = len(train.ids) / (time.perf_counter() - started)
    print(f"mkn order 5 scoring: {rate / 1e6:.2f} M tokens/s over {len(train.ids):,} train positions")

    started = time.perf_counter()
    kn3 = estimate("kn", count(train, 3, len(vocab)), len(vocab), bos)
    log_probs = kn3.log_probs(test)[test.ids != bos]
    ours = time.perf_counter() - started
    print(f"seqlab kn order 3: build + score test ({len(log_probs):,} tokens) {ours:.2f} s, "
          f"ppl {math.exp(-log_probs.mean()):.2f}")
    build, score_seconds, scored, total = nltk_kn3(tokens, vocab, args.nltk_test_tokens or None)
    per_token = score_seconds / scored
    nltk_total = build + per_token * len(log_probs)
    how = "measured" if scored == len(log_probs) else f"{scored:,} tokens timed, the rest at the same rate"
    print(f"nltk KneserNeyInterpolated order 3: build {build:.1f} s, scoring {per_token * 1e3:.2f} ms/token "
          f"-> build + score test {nltk_total:.1f} s ({how})")
    print(f"speed-up: {nltk_total / ours:.0f}x")


if __name__ == "__main__":
    main()
