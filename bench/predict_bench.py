"""Prediction from a long context: time and peak memory of `seqlab predict` on the first N tokens of
the test split, for any model (a neural model reads the context window by window).

    python bench/predict_bench.py [--model models/neural/model.pt] [--tokens 30000]

Needs the pipeline's outputs (`dvc repro`). Prints the context length, seconds, peak RSS and the top 3.
"""

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "neural" / "model.pt"))
    parser.add_argument("--tokens", type=int, default=30000, help="words of data/prepared/test.txt to read as the context")
    args = parser.parse_args()
    if not (ROOT / "data" / "prepared" / "test.txt").exists():
        sys.exit("error: data/prepared/test.txt not found; run `dvc repro` first")
    from seqlab.generate import predict
    from seqlab.loading import load

    text = " ".join((ROOT / "data" / "prepared" / "test.txt").read_text(encoding="utf-8").split()[: args.tokens])
    loaded = load(args.model, ROOT / "data" / "vocab", ROOT / "data" / "tokens" / "tokenizer.json")
    started = time.perf_counter()
    best = predict(loaded, text, 3)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.model}: a context of {len(loaded.tokenizer.tokenize(text)):,} tokens read in {seconds:.1f} s, "
          f"peak RSS {peak:,.0f} MB; next: " + ", ".join(f"{token!r} {p:.4f}" for token, p in best))


if __name__ == "__main__":
    main()
