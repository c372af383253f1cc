"""tune: search a task's hyperparameters with Ray Tune and ASHA.

`tune.py` searches the neural LM (params.yaml ``tune``) -> models/tune/best_config.json,
metrics/tune.json, metrics/tune_trials.csv, plots/tune.png; the train stage retrains on the best config.
`tune.py --task seq2seq` searches the encoder-decoder (``seq2seq_tune``) -> models/seq2seq_tune/best_config.json,
metrics/seq2seq/tune.json, tune_trials.csv, plots/seq2seq/tune.png; the seq2seq stage retrains on it.

Ray runs the trials on a local instance, or on the cluster at ``address`` / ``RAY_ADDRESS``.
"""

import argparse
import shutil
from pathlib import Path

import pandas as pd

from seqlab import paths, stage
from seqlab.config import TASKS, searchable_keys
from seqlab.errors import exit_on_error
from seqlab.io import atomic_path, write_json
from seqlab.models import output_layer
from seqlab.tune.plot import plot_search
from seqlab.tune.search import pair_search_data, run_search, search_data
from seqlab.tune.space import load_space, overrides
from seqlab.vocab import load_vocab

TRAINED_BY = {"lm": "train", "seq2seq": "seq2seq"}  # the stage that trains on the best configuration
OUTPUTS = {  # task -> best config, metrics, trials table, plot
    "lm": (paths.TUNE_BEST, "metrics/tune.json", "metrics/tune_trials.csv", "plots/tune.png"),
    "seq2seq": (paths.SEQ2SEQ_TUNE_BEST, "metrics/seq2seq/tune.json", "metrics/seq2seq/tune_trials.csv", "plots/seq2seq/tune.png"),
}


@exit_on_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", choices=sorted(TASKS), default="lm", help="the language model (lm) or the encoder-decoder (seq2seq)")
    task = parser.parse_args().task
    params = stage.params()
    section = TASKS[task].search
    tune = getattr(params, section)
    best_file, metrics_file, trials_file, plot_file = OUTPUTS[task]
    inputs = [paths.TOKENS, paths.VOCAB] if task == "lm" else [paths.PAIRS]
    space = load_space(tune, searchable_keys(task), stage.PARAMS_FILE, section)
    with stage.tracked(section, params, section, outs=(best_file, metrics_file, trials_file, plot_file)) as run:
        if not space.dimensions:
            print(f"{section}: optimization_config is empty; {TRAINED_BY[task]} uses params.yaml as is")
            table = pd.DataFrame(columns=["trial", "status", "rounds", "valid_ppl"])
            best, summary = {"trial": None, "config": {}}, {"trials": 0}
        else:
            if task == "lm":
                vocab = load_vocab(paths.VOCAB)
                data = search_data(paths.TOKENS, vocab, tune.train_tokens)
                _, fitted = output_layer(params.model.model_dump(), len(vocab))
                if fitted:
                    print(f"{section}: {fitted}")
                drawn = f"{len(data['train_ids']):,} train tokens"
            else:
                data = pair_search_data(paths.PAIRS, tune.train_tokens, tune.seed)
                drawn = f"{len(data['train_pairs']):,} train pairs"
            storage = tune.storage or (Path.cwd() / "checkpoints" / section)  # the workspace's: experiments at once each have one
            if tune.storage is None:
                shutil.rmtree(storage, ignore_errors=True)  # trial checkpoints of an earlier search
            print(f"{section}: {tune.num_samples} trials of up to {space.tokens:,} tokens ({space.rounds} rounds) drawn from "
                  f"{drawn}, {tune.search} search, ASHA (grace {tune.grace_period}, reduction {tune.reduction_factor:g})")
            result = run_search(space, params, data, run.children("trial"), storage)
            table, best = result.trials, result.best
            summary = {"trials": len(table), "trial_rounds": result.trial_rounds, "full_trial_rounds": result.full_rounds,
                       "asha_fraction": result.trial_rounds / result.full_rounds, "search_minutes": result.seconds / 60,
                       "cpus_per_trial": result.resources["cpu"], "gpus_per_trial": result.resources["gpu"],
                       "best_trial": best["trial"], "best_round": best["round"], "best_valid_ppl": best["valid_ppl"]}
            run.set_tag("seqlab.ray_cluster", result.cluster)
            if tune.storage is None:
                shutil.rmtree(storage, ignore_errors=True)
        changes = overrides(best["config"], space.dimensions)
        with atomic_path(trials_file) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
        plot_search(table, space, plot_file)
        write_json(metrics_file, {**summary, **{f"best.{key}": value for key, value in best["config"].items()}})
        write_json(best_file, {  # last: the training stage's input appears only with everything else
            "name": space.name, "space": space.source.split(":")[0], **best, "overrides": changes})
        run.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        run.log_params({"space_name": space.name, "space_tokens": space.tokens, "space_rounds": space.rounds})
        for artifact in (best_file, trials_file, plot_file):
            run.log_artifact(artifact)
        run.tag_data_hashes("deps", inputs)
        run.tag_data_hashes("outs", [best_file, metrics_file, trials_file, plot_file])
    if changes:
        print(f"{section}: best trial {best['trial']} (valid ppl {best['valid_ppl']:.2f} at round {best['round']}); "
              f"{TRAINED_BY[task]} will use {', '.join(f'{k}={v}' for k, v in changes.items())}")


if __name__ == "__main__":
    main()
