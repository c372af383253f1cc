"""validate: Great Expectations over the token stats, vocabulary and OOV rates -> data/validation/."""

import pandas as pd

from seqlab import paths, stage
from seqlab.corpus import SPLITS
from seqlab.errors import SeqLabError, exit_on_error
from seqlab.io import atomic_path, read_json, read_lines, write_json
from seqlab.validate import expectations, run_suite

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
        with atomic_path(OUT) as tmp:
            tmp.mkdir()
            result, failures = run_suite(tables(), suite, tmp / "docs")
            write_json(tmp / "result.json", result)
        checked = sum(len(v) for v in suite.values())
        run.log_metrics({"expectations": checked, "failed_expectations": len(failures)})
        run.log_artifact(f"{OUT}/result.json")
        run.log_artifact(f"{OUT}/docs", "data_docs")
        run.tag_data_hashes("deps", [TOKENS, VOCAB, VOCAB_METRICS])
        if failures:
            listed = "; ".join(map(str, failures))
            raise SeqLabError(
                f"validation failed, {len(failures)} of {checked} expectations: {listed} (see {OUT}/docs/index.html)"
            )
        run.tag_data_hashes("outs", [f"{OUT}/result.json", f"{OUT}/docs"])
        print(f"validate: {checked} expectations passed -> {OUT}/docs/index.html")


if __name__ == "__main__":
    main()
