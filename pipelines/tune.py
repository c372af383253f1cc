"""tune: search the neural LM's hyperparameters (params.yaml ``tune``) -> models/tune/best_config.json,
metrics/tune.json, metrics/tune_trials.csv, plots/tune.png. The train stage retrains on the best config.

Ray runs the trials on a local instance, or on the cluster at ``tune.address`` / ``RAY_ADDRESS``.
"""

import shutil

import pandas as pd

from seqlab import paths, stage
from seqlab.config import searchable_keys
from seqlab.errors import exit_on_error
from seqlab.io import atomic_path, write_json
from seqlab.models import output_layer
from seqlab.tracking import project_root
from seqlab.tune.plot import plot_search
from seqlab.tune.search import run_search, search_data
from seqlab.tune.space import load_space, overrides
from seqlab.vocab import load_vocab

TOKENS, VOCAB, BEST = paths.TOKENS, paths.VOCAB, paths.TUNE_BEST
METRICS, TRIALS, PLOT = "metrics/tune.json", "metrics/tune_trials.csv", "plots/tune.png"


@exit_on_error
def main() -> None:
    params = stage.params()
    tune = params.tune
    space = load_space(tune, searchable_keys(), stage.PARAMS_FILE)
    vocab = load_vocab(VOCAB)
    with stage.tracked("tune", params, "tune", outs=(BEST, METRICS, TRIALS, PLOT)) as run:
        if not space.dimensions:
            print("tune: optimization_config is empty; train uses params.yaml as is")
            table = pd.DataFrame(columns=["trial", "status", "rounds", "valid_ppl"])
            best, summary = {"trial": None, "config": {}}, {"trials": 0}
        else:
            data = search_data(TOKENS, vocab, tune.train_tokens)
            storage = tune.storage or (project_root() / "checkpoints" / "tune")
            if tune.storage is None:
                shutil.rmtree(storage, ignore_errors=True)  # trial checkpoints of an earlier search
            _, fitted = output_layer(params.model.model_dump(), len(vocab))
            if fitted:
                print(f"tune: {fitted}")
            print(f"tune: {tune.num_samples} trials of up to {space.tokens:,} tokens ({space.rounds} rounds) drawn from "
                  f"{len(data['train_ids']):,} train tokens, "
                  f"{tune.search} search, ASHA (grace {tune.grace_period}, reduction {tune.reduction_factor:g})")
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
        with atomic_path(TRIALS) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
        plot_search(table, space, PLOT)
        write_json(METRICS, {**summary, **{f"best.{key}": value for key, value in best["config"].items()}})
        write_json(BEST, {  # last: the train stage's input appears only with everything else
            "name": space.name, "space": space.source.split(":")[0], **best, "overrides": changes})
        run.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        run.log_params({"space_name": space.name, "space_tokens": space.tokens, "space_rounds": space.rounds})
        for artifact in (BEST, TRIALS, PLOT):
            run.log_artifact(artifact)
        run.tag_data_hashes("deps", [TOKENS, VOCAB])
        run.tag_data_hashes("outs", [BEST, METRICS, TRIALS, PLOT])
    if changes:
        print(f"tune: best trial {best['trial']} (valid ppl {best['valid_ppl']:.2f} at round {best['round']}); "
              f"train will use {', '.join(f'{k}={v}' for k, v in changes.items())}")


if __name__ == "__main__":
    main()
