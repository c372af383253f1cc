"""N-gram estimation at scale, side by side with KenLM's ``lmplz`` on the same synthetic Zipfian text.

For each size: a seeded corpus (vocabulary 50k, word ranks drawn from Zipf's law with exponent 1,
sentences of 1 + Poisson(19) words) written as token files. SeqLab's modified Kneser-Ney order 5 is
built in a process of its own: the token file read as the ngram stage reads it, then count (within
params.yaml's counting budget, 512M) and estimate, then the ARPA; wall time (the test scoring that
follows left out) and peak RSS of that process. ``lmplz -o 5 -S 20% --discount_fallback`` runs on
the same text (wall time and peak RSS); the fallback because from about 10M tokens every word of
this text follows two or more others, so no unigram has adjusted count 1 and lmplz stops, where
SeqLab falls back to the same discounts 0.5, 1, 1.5. Both models' test perplexity on the same test
tokens: SeqLab's by its one scoring path, lmplz's ARPA by KenLM's own query code. ``lmplz`` is
built from the source in the ``kenlm`` sdist when it is not on the PATH (needs cmake, a C++
compiler and Boost: apt-get install cmake libboost-program-options-dev libboost-system-dev
libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev).

    python bench/ngram_scale_bench.py [--tokens 1M 16M 100M] [--work DIR] [--lmplz PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ORDER, VOCAB, SEED, TEST_TOKENS = 5, 50_000, 0, 200_000
MEMORY = 512 << 20  # params.yaml's ngram.memory


def parse_count(text: str) -> int:
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}
    return int(float(text[:-1]) * scale[text[-1].upper()]) if text[-1].upper() in scale else int(text)


def zipf_text(path: Path, tokens: int, seed: int) -> None:
    """``tokens`` words of Zipfian text, one sentence per line, written in blocks (bounded memory)."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(1.0 / np.arange(1, VOCAB + 1))
    cdf /= cdf[-1]
    words = np.array([f"w{i}" for i in range(VOCAB)], dtype=object)
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        while written < tokens:
            lengths = 1 + rng.poisson(19, size=50_000)
            lengths = lengths[np.cumsum(lengths) <= tokens - written] if lengths.sum() > tokens - written else lengths
            if not len(lengths):
                lengths = np.array([tokens - written])
            ids = np.minimum(np.searchsorted(cdf, rng.random(int(lengths.sum()))), VOCAB - 1)
            ends = np.cumsum(lengths)
            for start, end in zip(np.concatenate([[0], ends[:-1]]), ends):
                out.write(" ".join(words[ids[start:end]]) + "\n")
            written += int(lengths.sum())


def corpus(work: Path, tokens: int) -> Path:
    folder = work / f"zipf-{tokens}"
    if not (folder / "done").exists():
        folder.mkdir(parents=True, exist_ok=True)
        zipf_text(folder / "train.txt", tokens, SEED)
        zipf_text(folder / "test.txt", TEST_TOKENS, SEED + 1)
        (folder / "done").write_text("")
    return folder


def lmplz(work: Path, given: str | None) -> str:
    found = given or shutil.which("lmplz") or (str(work / "lmplz") if (work / "lmplz").exists() else None)
    if found:
        return found
    print("building lmplz from the kenlm sdist ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        "--no-build-isolation", "kenlm==0.3.0", "-d", tmp], check=True)
        with tarfile.open(next(Path(tmp).glob("kenlm-*.tar.gz"))) as sdist:
            sdist.extractall(tmp, filter="data")
        source = next(p for p in Path(tmp).iterdir() if p.is_dir())
        build = source / "build"
        build.mkdir()
        subprocess.run(["cmake", "-DCMAKE_BUILD_TYPE=Release", ".."], cwd=build, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["make", f"-j{os.cpu_count()}", "lmplz"], cwd=build, check=True, stdout=subprocess.DEVNULL)
        shutil.copy(build / "bin" / "lmplz", work / "lmplz")
    return str(work / "lmplz")


def measured(command: list[str], **kwargs) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall seconds and peak RSS (GB) of ``command``, a process of its own."""
    started = time.perf_counter()
    process = subprocess.Popen(command, **kwargs)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{command[0]} failed with exit status {process.returncode}")
    return seconds, usage.ru_maxrss / 1024**2, process


def vocabulary(folder: Path):
    """The train words (every one kept), saved as the vocab stage saves a vocabulary."""
    from collections import Counter

    from seqlab.io import read_line_blocks
    from seqlab.vocab import build_vocab, load_vocab, save_vocab

    if not (folder / "vocab" / "vocab.tsv").exists():
        counts = Counter()
        for block in read_line_blocks(folder / "train.txt"):
            counts.update(token for line in block for token in line.split(" "))
        save_vocab(build_vocab([counts.elements()]), folder / "vocab")  # one pass over the counts, not a list of every token
    return load_vocab(folder / "vocab")


def seqlab_build(folder: Path) -> None:
    """In a process of its own, what the ngram stage does: read the vocabulary and the train tokens, count
    and estimate, write the ARPA; then the model's test perplexity through SeqLab's scoring path. Prints
    the phases' seconds and the perplexity as JSON."""
    from seqlab.ngram import count, estimate
    from seqlab.ngram.arpa import write_arpa
    from seqlab.scoring import read_eval_set, score
    from seqlab.vocab import BOS

    started = time.perf_counter()
    vocab = vocabulary(folder)
    train = read_eval_set(folder / "train.txt", vocab, 0).segments
    read = time.perf_counter()
    tables = count(train, ORDER, len(vocab), MEMORY)
    del train
    model = estimate("mkn", tables, len(vocab), vocab.index[BOS])
    built = time.perf_counter()
    write_arpa(model, list(vocab.tokens), folder / "seqlab.arpa")
    written = time.perf_counter()
    ppl = score(model, read_eval_set(folder / "test.txt", vocab, 0), "seqlab").ppl
    print(json.dumps({"read": read - started, "build": built - read, "arpa": written - built, "ppl": ppl,
                      "scoring": time.perf_counter() - written}))


def kenlm_ppl(folder: Path, arpa: Path) -> float:
    """Perplexity of ``arpa`` on the test tokens by KenLM's own query code (every token and </s>; words
    outside the model as <unk>)."""
    import kenlm

    model = kenlm.Model(str(arpa))
    log10, tokens = 0.0, 0
    with open(folder / "test.txt", encoding="utf-8") as lines:
        for line in lines:
            line = line.rstrip("\n")
            log10 += model.score(line, bos=True, eos=True)
            tokens += len(line.split(" ")) + 1 if line else 1
    return 10 ** (-log10 / tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", nargs="+", default=["1M", "16M"], help="train sizes (K, M, G suffixes)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "seqlab-ngram-scale",
                        help="corpora and models; a corpus already there is reused")
    parser.add_argument("--lmplz", default=None, help="the lmplz binary (default: on the PATH, else built)")
    parser.add_argument("--build", metavar="FOLDER", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        return seqlab_build(args.build)
    args.work.mkdir(parents=True, exist_ok=True)
    binary = lmplz(args.work, args.lmplz)
    print(f"{'train tokens':>12} | {'SeqLab s':>8} {'(read+build+arpa)':>20} {'peak GB':>8} | {'lmplz s':>8} {'peak GB':>8} "
          f"| {'test ppl SeqLab':>15} {'lmplz':>12} {'rel diff':>9}", flush=True)
    for size in args.tokens:
        tokens = parse_count(size)
        folder = corpus(args.work, tokens)
        vocabulary(folder)
        ours, ours_gb, done = measured([sys.executable, __file__, "--build", str(folder)], stdout=subprocess.PIPE)
        phases = json.loads(done.stdout.read())
        ours -= phases["scoring"]  # the test perplexity is SeqLab's own check, not part of the build lmplz is timed on
        theirs, theirs_gb, _ = measured([binary, "-o", str(ORDER), "-S", "20%", "--discount_fallback", "-T", str(folder), "--text",
                                         str(folder / "train.txt"), "--arpa", str(folder / "lmplz.arpa")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        a, b = phases["ppl"], kenlm_ppl(folder, folder / "lmplz.arpa")
        split = f"{phases['read']:.1f}+{phases['build']:.1f}+{phases['arpa']:.1f}"
        print(f"{tokens:>12,} | {ours:>8.1f} {split:>20} {ours_gb:>8.2f} | {theirs:>8.1f} {theirs_gb:>8.2f} "
              f"| {a:>15.4f} {b:>12.4f} {abs(a - b) / b:>9.1e}", flush=True)


if __name__ == "__main__":
    main()
