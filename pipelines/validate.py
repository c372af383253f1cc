"""validate: Great Expectations over the token stats, vocabulary and OOV rates -> data/validation/."""

import pandas as pd

from seqlab import paths, stage
from seqlab.corpus import SPLITS
from seqlab.errors import exit_on_error
from seqlab.io import read_json, read_lines
from seqlab.validate import expectations, validate_into

TOKENS, VOCAB, VOCAB_METRICS, OUT = paths.TOKENS, paths.VOCAB, "metrics/vocab.json", paths.VALIDATION


def tables() -> dict[str, pd.DataFrame]:
    frames = {f"{split}.stats": pd.read_parquet(f"{TOKENS}/{split}.stats.parquet") for split in SPLITS}
    entries = [line.partition("\t") for line in read_lines(f"{VOCAB}/vocab.tsv")]
    frames["vocab"] = pd.DataFrame({"token": [e[0] for e in entries], "count": [e[2] for e in entries]})
    metrics = read_json(VOCAB_METRICS)
    frames["oov"] = pd.DataFrame({"split": ["valid", "test"], "oov_rate": [metrics["valid_oov_rate"], metrics["test_oov_rate"]]})
    return frames


@exit_on_error
def main() -> None:
    params = stage.params()
    cfg = params.validate_
    with stage.tracked("validate", params, "validate") as run:
        suite = expectations(cfg.min_tokens, cfg.max_tokens, cfg.max_oov_rate)
        checked = validate_into(OUT, tables(), suite, run, [TOKENS, VOCAB, VOCAB_METRICS])
        print(f"validate: {checked} expectations passed -> {OUT}/docs/index.html")

if __name__ == "__main__":
    main()
