"""seq2seq_evaluate: every encoder-decoder the pipeline trained, on the same test sources ->
metrics/seq2seq/leaderboard.csv, metrics/seq2seq/metrics.json (DVC metrics), metrics/seq2seq/wer_by_length.csv,
plots/seq2seq/wer_by_length.png (attention against none by word length)."""

import pandas as pd

from seqlab import paths, stage
from seqlab.errors import exit_on_error
from seqlab.io import atomic_path, read_json, write_json
from seqlab.leaderboard import plot_wer_by_length, seq2seq_leaderboard, wer_by_length
from seqlab.pairs import read_pairs, references

BOARD, METRICS, BY_LENGTH, PLOT = ("metrics/seq2seq/leaderboard.csv", "metrics/seq2seq/metrics.json",
                                   "metrics/seq2seq/wer_by_length.csv", "plots/seq2seq/wer_by_length.png")


@exit_on_error
def main() -> None:
    params = stage.params()
    with stage.tracked("seq2seq_evaluate", params, "seq2seq_baselines", outs=(BOARD, METRICS, BY_LENGTH, PLOT)) as run:
        folders = [f"{paths.SEQ2SEQ}/{name}" for name in ("attention", *params.seq2seq_baselines)]
        summaries = {folder: read_json(f"{folder}/scores.json") for folder in folders}
        board = seq2seq_leaderboard(summaries)
        with atomic_path(BOARD) as tmp:
            board.to_csv(tmp, index=False, float_format="%.6g")
        write_json(METRICS, {"test_sources": int(next(iter(summaries.values()))["test"]["sources"]), "best_model": board.model.iloc[0],
                             "models": {row.model: {k: getattr(row, k) for k in board.columns if k.startswith(("test_", "valid_"))}
                                        for row in board.itertuples()}})
        refs = references(read_pairs(f"{paths.PAIRS}/test.tsv"))
        found = {}
        for folder in folders:
            table = pd.read_csv(f"{folder}/test_hypotheses.tsv", sep="\t", keep_default_na=False, dtype=str)
            found[summaries[folder]["model"]] = {tuple(s.split()): tuple(h.split()) for s, h in zip(table.source, table.hypothesis)}
        frame = wer_by_length(found, refs)
        with atomic_path(BY_LENGTH) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
        plot_wer_by_length(frame, PLOT)
        best = board.iloc[0]
        run.log_metrics({"best_test_wer": best.test_wer, "best_test_per": best.test_per})
        run.set_tag("seqlab.best_model", best.model)
        for artifact in (BOARD, BY_LENGTH, PLOT):
            run.log_artifact(artifact)
        run.tag_data_hashes("deps", folders)
        columns = [c for c in ("rank", "model", "test_per", "test_wer", "test_per_without_stress", "test_wer_without_stress", "test_target_ppl") if c in board]
        print(board[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        print(f"seq2seq_evaluate: {len(board)} models on the same {len(refs):,} test sources; best on test WER: {best.model}")


if __name__ == "__main__":
    main()
