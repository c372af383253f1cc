"""The n-gram build on Ray (``ngram.engine: ray``) on a local Ray instance, on the same synthetic Zipfian
text as ``ngram_scale_bench.py`` (its corpora are reused from ``--work``).

For each size: modified Kneser-Ney order 5 with params.yaml's counting budget (512M): the train tokens
counted in shards by Ray tasks, merged into partitions, estimated there and written as Parquet, then
the model read back on the driver and its test perplexity computed by SeqLab's scoring path (the
single-process build's figure is ``ngram_scale_bench.py``'s). Wall time of each phase, and the peak
memory of the driver and every Ray process together (proportional set size, so the object store's
shared pages count once; sampled every second), and the driver's own peak RSS (the read-back and the
scoring: the driver holds little while the tasks run). ``--read-back`` reads back the model an earlier
run left in ``--work`` and scores it, with no Ray: the read-back's own time and peak.

    python bench/ngram_ray_bench.py [--tokens 16M 100M] [--workers 2] [--work DIR] [--read-back]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).parent
spec = importlib.util.spec_from_file_location("ngram_scale_bench", HERE / "ngram_scale_bench.py")
scale = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scale)


def ray_build(folder: Path, workers: int, partitions: int | None, read_back: bool) -> None:
    """In a process of its own: a local Ray instance of ``workers`` CPUs, the count and the estimate on
    it (unless ``read_back``: the model an earlier run wrote), then the test perplexity of the model
    read back. Prints the phases' seconds, the driver's peak RSS and the perplexity."""
    import resource

    from seqlab.ngram.ray_engine import count_on_ray, estimate_on_ray, read_model
    from seqlab.scoring import read_eval_set, score
    from seqlab.vocab import BOS

    started = time.perf_counter()
    vocab = scale.vocabulary(folder)
    ready = counted_at = estimated = started
    shards = parts = 0
    if not read_back:
        import ray

        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
        ready = time.perf_counter()
        counted = count_on_ray(folder / "train.txt", vocab, scale.ORDER, scale.MEMORY, [], parts=partitions, progress=False)
        counted_at, shards, parts = time.perf_counter(), counted.shards, counted.parts
        estimate_on_ray(counted, "mkn", scale.ORDER, folder / "ray-mkn-5", progress=False, read=False)
        del counted
        ray.shutdown()  # the object store's memory given back before the model is read
        estimated = time.perf_counter()
    model = read_model(folder / "ray-mkn-5", "mkn", scale.ORDER, len(vocab), vocab.index[BOS], scale.MEMORY)
    built = time.perf_counter()
    ppl = score(model, read_eval_set(folder / "test.txt", vocab, 0), "seqlab").ppl
    print(json.dumps({"start": ready - started, "count": counted_at - ready, "estimate": estimated - counted_at,
                      "read": built - estimated, "shards": shards, "parts": parts, "ppl": ppl,
                      "driver": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def peak_pss(root: psutil.Process, stop: threading.Event, out: dict) -> None:
    while not stop.is_set():
        total = 0
        for process in [root, *root.children(recursive=True)]:
            try:
                total += process.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        out["peak"] = max(out.get("peak", 0), total)
        stop.wait(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", nargs="+", default=["16M"], help="train sizes (K, M, G suffixes)")
    parser.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--partitions", type=int, default=0, help="partitions of the n-grams (default: as ngram.partitions null)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "seqlab-ngram-scale",
                        help="corpora (shared with ngram_scale_bench.py)")
    parser.add_argument("--read-back", action="store_true", help="only read back and score the model a run left in --work")
    parser.add_argument("--build", metavar="FOLDER", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        return ray_build(args.build, args.workers, args.partitions or None, args.read_back)
    print(f"{'train tokens':>12} | {'workers':>7} {'shards':>6} {'parts':>5} | {'wall s':>7} {'(start+count+estimate+read)':>29} "
          f"{'peak GB':>8} {'driver GB':>9} | {'test ppl':>10}", flush=True)
    for size in args.tokens:
        folder = scale.corpus(args.work, scale.parse_count(size))
        scale.vocabulary(folder)
        started = time.perf_counter()
        if args.read_back and not (folder / "ray-mkn-5").is_dir():
            raise SystemExit(f"{folder / 'ray-mkn-5'}: no model to read back; run without --read-back first")
        child = psutil.Popen([sys.executable, __file__, "--build", str(folder), "--workers", str(args.workers),
                              "--partitions", str(args.partitions)] + ["--read-back"] * args.read_back, stdout=subprocess.PIPE)
        stop, peak = threading.Event(), {}
        sampler = threading.Thread(target=peak_pss, args=(child, stop, peak), daemon=True)
        sampler.start()
        output = child.stdout.read()
        if child.wait():
            raise SystemExit(f"the Ray build failed with exit status {child.returncode}")
        stop.set()
        sampler.join()
        wall = time.perf_counter() - started
        phases = json.loads(output)
        split = f"{phases['start']:.1f}+{phases['count']:.1f}+{phases['estimate']:.1f}+{phases['read']:.1f}"
        print(f"{scale.parse_count(size):>12,} | {args.workers:>7} {phases['shards']:>6} {phases['parts']:>5} | {wall:>7.1f} {split:>29} "
              f"{peak['peak'] / 1024**3:>8.2f} {phases['driver'] / 1024**3:>9.2f} | {phases['ppl']:>10.4f}", flush=True)


if __name__ == "__main__":
    main()
