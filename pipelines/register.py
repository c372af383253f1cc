"""register: the champion gate, once per task. The language models' leaderboard's best model (on valid)
is found in the MLflow registry; the alias `champion` moves to it only if its test perplexity beats the
current champion's on the same test tokens and vocabulary, otherwise it becomes its family's
`challenger` -> metrics/register.json. The same for the encoder-decoders: the best on valid WER, gated
by test WER on the same test pairs -> metrics/seq2seq/register.json. Experiments run at once take turns
through the gate, so each compares with the champion the one before it left."""

from mlflow import MlflowClient

import pandas as pd

from seqlab import paths, stage
from seqlab.errors import exit_on_error
from seqlab.io import write_json
from seqlab.registry import Decision, describe, find_version, gate, registered_name, task_of

LEADERBOARD, OUT = paths.LEADERBOARD, "metrics/register.json"
SEQ2SEQ_LEADERBOARD, SEQ2SEQ_OUT = "metrics/seq2seq/leaderboard.csv", "metrics/seq2seq/register.json"


def gate_and_report(client, registered_model: str, folder: str, on_new_test_set: str, out: str, use: str) -> Decision:
    """Gate the version built from ``folder``; ``use`` says how to use the champion (``{}``: its name)."""
    candidate = find_version(client, registered_model, folder)
    decision = gate(client, candidate, on_new_test_set)
    write_json(out, decision.as_dict())
    champion = candidate if decision.outcome == "promoted" else decision.champion
    print(describe(decision))
    print(f"register: the {task_of(candidate.tags)} champion is {champion.label}, {champion.metric[1]} {champion.score:.4f}: "
          + use.format(f"models:/{champion.name}@champion"))
    return decision


@exit_on_error
def main() -> None:
    params = stage.params()
    best = pd.read_csv(LEADERBOARD).iloc[0]
    seq2seq = pd.read_csv(SEQ2SEQ_LEADERBOARD).sort_values(["valid_wer", "model"]).iloc[0]
    with stage.tracked("register", params, "register") as run:
        client = MlflowClient()
        on_new = params.register_.on_new_test_set
        decision = gate_and_report(client, best.registered_model, best.path, on_new, OUT, 'seqlab predict --model {} --context "..."')
        transducer = gate_and_report(client, registered_name(f"seq2seq_{seq2seq.attention}"), seq2seq.path, on_new, SEQ2SEQ_OUT,
                          "mlflow models serve -m {}")
        run.set_tag("seqlab.gate", f"{decision.outcome}: {decision.reason}")
        run.set_tag("seqlab.seq2seq_gate", f"{transducer.outcome}: {transducer.reason}")
        run.log_params({"candidate": decision.candidate.label, "seq2seq_candidate": transducer.candidate.label})
        run.log_artifact(OUT)
        run.log_artifact(SEQ2SEQ_OUT)


if __name__ == "__main__":
    main()
