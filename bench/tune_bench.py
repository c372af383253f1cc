"""Search benchmark on the pipeline's data (run `dvc repro` first): the share of trial-rounds ASHA ran
against running every trial to its end, wall time, tokens/s per trial and the best perplexity.

    python bench/tune_bench.py                      # the default search of params.yaml (CPU profile)
    python bench/tune_bench.py -S tune.space_file=configs/tune_gpu.json -S tune.train_tokens=null
    python bench/tune_bench.py --no-asha            # the same trials, each run to its end (ASHA's grace period = rounds)

``-S section.key=value`` overrides any key, as ``dvc exp run -S`` would. Trials are logged to a
throw-away MLflow store.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-S", dest="sets", action="append", default=[], metavar="section.key=value")
    parser.add_argument("--no-asha", action="store_true", help="run every trial to its end")
    args = parser.parse_args()
    if not (ROOT / "data" / "vocab" / "vocab.tsv").exists():
        sys.exit("error: data/vocab not found; run `dvc repro` first")

    import mlflow
    import torch
    from mlflow import MlflowClient

    from seqlab.config import load_params, searchable_keys
    from seqlab.tracking import ChildRuns
    from seqlab.tune.search import run_search, search_data
    from seqlab.tune.space import load_space
    from seqlab.vocab import load_vocab

    params = load_params(ROOT / "params.yaml", {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.sets)})
    space = load_space(params.tune, searchable_keys())
    tune = params.tune.model_copy(update={"grace_period": space.rounds}) if args.no_asha else params.tune
    vocab = load_vocab(ROOT / "data" / "vocab")
    data = search_data(ROOT / "data" / "tokens", vocab, tune.train_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        client = MlflowClient()
        experiment = client.create_experiment("bench", artifact_location=Path(tmp, "artifacts").as_uri())
        parent = client.create_run(experiment, run_name="search").info.run_id
        result = run_search(space, params.model_copy(update={"tune": tune}), data, ChildRuns(client, experiment, parent, "trial"),
                            Path(tmp) / "storage")
    table = result.trials
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print()
    print(f"search {space.name}: {len(table)} trials of up to {space.tokens:,} tokens ({space.rounds} rounds) from {len(data['train_ids']):,} train tokens, "
          f"{tune.search} search, {'no ASHA' if args.no_asha else f'ASHA grace {tune.grace_period}, reduction {tune.reduction_factor:g}'}")
    print(f"resources per trial: {result.resources['cpu']:g} CPU, {result.resources['gpu']:g} GPU ({device}); {result.cluster}")
    print(f"trial-rounds run: {result.trial_rounds} of {result.full_rounds} ({result.trial_rounds / result.full_rounds:.1%})")
    print(f"wall time: {result.seconds / 60:.1f} min")
    speeds = table["tokens_per_s"].dropna()
    print(f"tokens/s per trial: median {speeds.median():,.0f}, min {speeds.min():,.0f}, max {speeds.max():,.0f}")
    print(f"best: trial {result.best['trial']}, valid ppl {result.best['valid_ppl']:.2f} at round {result.best['round']}, "
          f"{result.best['config']}")
    columns = ["trial", "status", "rounds", "valid_ppl", "tokens_per_s", *[d.key for d in space.dimensions]]
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
