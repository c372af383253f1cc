"""register: the champion gate. The leaderboard's best model (on valid) is found in the MLflow registry;
the alias `champion` moves to it only if its test perplexity beats the current champion's on the same
test tokens and vocabulary, otherwise it becomes its family's `challenger` -> metrics/register.json."""

from mlflow import MlflowClient

import pandas as pd

from seqlab import paths, stage
from seqlab.errors import exit_on_error
from seqlab.io import write_json
from seqlab.registry import apply, current_champion, decide, describe, find_version, task_of

LEADERBOARD, OUT = paths.LEADERBOARD, "metrics/register.json"


@exit_on_error
def main() -> None:
    params = stage.params()
    best = pd.read_csv(LEADERBOARD).iloc[0]
    with stage.tracked("register", params, "register") as run:
        client = MlflowClient()
        candidate = find_version(client, best.registered_model, best.path)
        decision = decide(candidate, current_champion(client, task_of(candidate.tags)), params.register_.on_new_test_set)
        apply(client, decision)
        write_json(OUT, decision.as_dict())
        run.set_tag("seqlab.gate", f"{decision.outcome}: {decision.reason}")
        run.log_params({"candidate": candidate.label})
        run.log_artifact(OUT)
        champion = candidate if decision.outcome == "promoted" else decision.champion
        print(describe(decision))
        print(f"register: champion is {champion.label}, test ppl {champion.test_ppl:.4f}: "
              f"seqlab predict --model models:/{champion.name}@champion --context \"...\"")


if __name__ == "__main__":
    main()
