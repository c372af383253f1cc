"""pairs_validate: Great Expectations over the sequence-to-sequence pairs, their vocabularies and OOV
rates -> data/seq2seq_validation/ (result.json, Data Docs)."""

import pandas as pd

from seqlab import paths, stage
from seqlab.errors import SeqLabError, exit_on_error
from seqlab.io import atomic_path, read_json, read_lines, write_json
from seqlab.pairs import SPLITS
from seqlab.validate import pair_expectations, run_suite

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
        with atomic_path(OUT) as tmp:
            tmp.mkdir()
            result, failures = run_suite(tables(), suite, tmp / "docs")
            write_json(tmp / "result.json", result)
        checked = sum(len(v) for v in suite.values())
        run.log_metrics({"expectations": checked, "failed_expectations": len(failures)})
        run.log_artifact(f"{OUT}/result.json")
        run.tag_data_hashes("deps", [PAIRS, METRICS])
        if failures:
            raise SeqLabError(f"validation failed, {len(failures)} of {checked} expectations: {'; '.join(map(str, failures))} "
                              f"(see {OUT}/docs/index.html)")
        run.tag_data_hashes("outs", [f"{OUT}/result.json", f"{OUT}/docs"])
        print(f"pairs_validate: {checked} expectations passed -> {OUT}/docs/index.html")


if __name__ == "__main__":
    main()
