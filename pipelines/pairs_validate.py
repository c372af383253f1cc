"""pairs_validate: Great Expectations over the sequence-to-sequence pairs, their vocabularies and OOV
rates -> data/seq2seq_validation/ (result.json, Data Docs)."""

import pandas as pd

from seqlab import paths, stage
from seqlab.errors import exit_on_error
from seqlab.io import read_json, read_lines
from seqlab.pairs import SPLITS
from seqlab.validate import pair_expectations, validate_into

PAIRS, METRICS, OUT = paths.PAIRS, "metrics/pairs.json", "data/seq2seq_validation"


def tables() -> dict[str, pd.DataFrame]:
    frames = {}
    for split in SPLITS:
        rows = [line.partition("\t") for line in read_lines(f"{PAIRS}/{split}.tsv")]
        frames[f"{split}.pairs"] = pd.DataFrame({"source_tokens": [len(r[0].split()) for r in rows],
                                                 "target_tokens": [len(r[2].split()) for r in rows],
                                                 "text": [f"{r[0]} {r[2]}" for r in rows]})
    for side in ("source", "target"):
        entries = [line.partition("\t") for line in read_lines(f"{PAIRS}/{side}_vocab/vocab.tsv")]
        frames[f"{side}.vocab"] = pd.DataFrame({"token": [e[0] for e in entries], "count": [e[2] for e in entries]})
    metrics = read_json(METRICS)
    frames["oov"] = pd.DataFrame({"split": ["valid", "test"],
                                  "source_oov_rate": [metrics[f"{s}_source_oov_rate"] for s in ("valid", "test")],
                                  "target_oov_rate": [metrics[f"{s}_target_oov_rate"] for s in ("valid", "test")]})
    return frames


@exit_on_error
def main() -> None:
    params = stage.params()
    cfg = params.pairs
    with stage.tracked("pairs_validate", params, "pairs") as run:
        suite = pair_expectations(cfg.max_length, cfg.max_oov_rate)
        checked = validate_into(OUT, tables(), suite, run, [PAIRS, METRICS])
        print(f"pairs_validate: {checked} expectations passed -> {OUT}/docs/index.html")

if __name__ == "__main__":
    main()
