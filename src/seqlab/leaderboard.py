"""The leaderboard: every model's scores in one table, ranked by valid perplexity; its DVC metrics;
the perplexity plot and the neural models' learning curves."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from seqlab.errors import SeqLabError
from seqlab.plots import pyplot, save

METRICS = ("ppl", "xent_nats", "xent_bits", "bits_per_char")


def leaderboard(summaries: dict[str, dict]) -> pd.DataFrame:
    """One row per model from its folder's ``scores.json`` (``{folder: summary}``); refuses models
    scored on different test tokens or with another vocabulary."""
    first, reference = next(iter(summaries.items()))
    for folder, s in summaries.items():
        if s["test"]["fingerprint"] != reference["test"]["fingerprint"]:
            raise SeqLabError(f"{first} and {folder} were scored on different test tokens; rerun `dvc repro`")
        if s["vocab_sha256"] != reference["vocab_sha256"]:
            raise SeqLabError(f"{first} and {folder} use different vocabularies; rerun `dvc repro`")
    names: dict[str, str] = {}
    for folder, s in summaries.items():
        if s["model"] in names:
            raise SeqLabError(f"{names[s['model']]} and {folder} are both named {s['model']!r}; give the baseline another name in params.yaml")
        names[s["model"]] = folder
    rows = []
    for folder, s in summaries.items():
        row = {"model": s["model"], "family": s["family"], "estimator": s["estimator"], "order": s["order"],
               "path": folder, "registered_model": s.get("registered_model")}
        for split in ("valid", "test"):
            row |= {f"{split}_{k}": s[split][k] for k in METRICS}
        row |= {"test_tokens": s["test"]["tokens"], "test_oov_tokens": s["test"]["oov_tokens"],
                "test_zero_prob_tokens": s["test"]["zero_prob_tokens"]}
        rows.append(row)
    board = pd.DataFrame(rows).sort_values(["valid_ppl", "model"]).reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    return board


def dvc_metrics(board: pd.DataFrame) -> dict:
    """The DVC metrics file: token counts, the best model, and each model's figures (``inf`` as text)."""
    finite = lambda value: value if math.isfinite(value) else "inf"  # noqa: E731
    keys = ("valid_ppl", "valid_xent_nats", "valid_xent_bits", "test_ppl", "test_xent_nats", "test_xent_bits", "test_bits_per_char")
    return {
        "test_tokens": int(board.test_tokens.iloc[0]),
        "test_oov_tokens": int(board.test_oov_tokens.iloc[0]),
        "best_model": board.model.iloc[0],
        "models": {row.model: {k: finite(getattr(row, k)) for k in keys} for row in board.itertuples()},
    }


def plot_perplexity(board: pd.DataFrame, path: str | Path) -> None:
    """Test perplexity against order, one line per n-gram estimator (infinite perplexities left out);
    each neural model and the hybrid, which have no order, are dashed horizontal lines."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(9, 4.8))
    ngram = board[board.family == "ngram"]
    for estimator, rows in ngram.groupby("estimator", sort=False):
        rows = rows[rows.test_ppl.map(math.isfinite)].sort_values("order")
        if len(rows):
            ax.plot(rows.order, rows.test_ppl, marker="o", label=estimator)
    styles = ["--", "-.", ":", (0, (5, 1, 1, 1, 1, 1))]
    for i, row in enumerate(board[board.family != "ngram"].itertuples()):
        ax.axhline(row.test_ppl, linestyle=styles[i % len(styles)], linewidth=1.6,
                   color=f"C{(len(ngram.estimator.unique()) + i) % 10}", label=f"{row.model} ({row.test_ppl:.1f})")
    missing = sorted(set(ngram.estimator) - {e for e, rows in ngram.groupby("estimator") if rows.test_ppl.map(math.isfinite).any()})
    ax.set_yscale("log")
    ax.set_xticks(sorted(ngram.order.unique()))
    ax.set_xlabel("n-gram order")
    ax.set_ylabel("test perplexity (log scale)")
    ax.set_title(f"Perplexity on the same {int(board.test_tokens.iloc[0])} test tokens")
    ax.grid(True, which="both", alpha=0.3)
    if missing:
        ax.plot([], [], linestyle="none", label=f"{', '.join(missing)}: inf (unseen n-grams)")
    ax.legend(title="model", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save(fig, path)


def learning_curves(histories: dict[str, list[dict]]) -> pd.DataFrame:
    """Valid perplexity by round, a column per neural model (``{column: history}``), for ``dvc plots``."""
    frame = pd.DataFrame({"round": sorted({r["round"] for history in histories.values() for r in history})})
    for column, history in histories.items():
        frame[column] = frame["round"].map({r["round"]: r["valid_ppl"] for r in history})
    return frame


def plot_learning_curves(histories: dict[str, list[dict]], path: str | Path) -> None:
    """Train and valid perplexity by tokens seen for each neural model (``{model name: history}``); a
    star marks the best round on valid."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, history) in enumerate(histories.items()):
        seen = [r["tokens"] / 1e6 for r in history]
        valid = [r["valid_ppl"] for r in history]
        ax.plot(seen, valid, marker="o", color=f"C{i}", label=f"{name} valid")
        ax.plot(seen, [math.exp(r["train_loss"]) for r in history], linestyle="--", color=f"C{i}", alpha=0.6, label=f"{name} train")
        best = min(range(len(valid)), key=valid.__getitem__)
        ax.plot([seen[best]], [valid[best]], marker="*", markersize=14, color=f"C{i}", markeredgecolor="black", linestyle="none")
    ax.set_yscale("log")
    ax.set_xlabel("train tokens seen (millions)")
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title("Learning curves of the neural models (star: best round on valid)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    save(fig, path)


# --- the sequence-to-sequence task ------------------------------------------------------------------

SEQ2SEQ_COLUMNS = ("per", "wer", "target_ppl", "target_xent_nats", "bleu", "chrf", "per_without_stress", "wer_without_stress")


def seq2seq_leaderboard(summaries: dict[str, dict]) -> pd.DataFrame:
    """One row per encoder-decoder (``{folder: summary}``), ranked by test WER; refuses models scored on
    other test sources or with other vocabularies."""
    first, reference = next(iter(summaries.items()))
    rows = []
    for folder, s in summaries.items():
        if (s["test"]["sources"], s["test"]["target_tokens"], s["vocab_sha256"]) != \
                (reference["test"]["sources"], reference["test"]["target_tokens"], reference["vocab_sha256"]):
            raise SeqLabError(f"{first} and {folder} were scored on different test pairs or vocabularies; rerun `dvc repro`")
        transformer = s["config"].get("kind") == "transformer"
        row = {"model": s["model"], "kind": "transformer" if transformer else "rnn",
               "attention": "multihead" if transformer else s["config"]["attention"],
               "rnn": "-" if transformer else s["config"]["rnn"], "path": folder,
               "parameters": s["parameters"], "valid_target_ppl": s["valid"]["target_ppl"], "valid_wer": s["valid"]["wer"]}
        row |= {f"test_{k}": s["test"][k] for k in SEQ2SEQ_COLUMNS if k in s["test"]}
        rows.append(row)
    board = pd.DataFrame(rows).sort_values(["test_wer", "model"]).reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    return board


def wer_by_length(hypotheses: dict[str, dict[tuple[str, ...], tuple[str, ...]]],
                  references: dict[tuple[str, ...], list[tuple[str, ...]]], longest: int = 14) -> pd.DataFrame:
    """Sequence error rate by source length (lengths above ``longest`` pooled), a column per model
    (``{model: {source: best hypothesis}}``), with the number of sources of each length."""
    from seqlab.edit_rates import closest

    length = lambda source: min(len(source), longest + 1)  # noqa: E731
    frame = pd.DataFrame({"source_length": sorted({length(s) for s in references})})
    frame["sources"] = frame.source_length.map(pd.Series([length(s) for s in references]).value_counts())
    for model, found in hypotheses.items():
        wrong: dict[int, int] = {}
        for source, refs in references.items():
            wrong[length(source)] = wrong.get(length(source), 0) + (closest(found[source], refs)[0] > 0)
        frame[model] = frame.source_length.map(wrong) / frame.sources
    return frame


def plot_wer_by_length(frame: pd.DataFrame, path: str | Path, longest: int = 14) -> None:
    """WER against source length, a line per model, and how many test sources each length has."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.5))
    models = [c for c in frame.columns if c not in ("source_length", "sources")]
    for i, model in enumerate(models):
        ax.plot(frame.source_length, 100 * frame[model], marker="o", color=f"C{i}", label=model)
    ax.set_xlabel(f"source length (tokens; {longest + 1} means {longest + 1} or more)")
    ax.set_ylabel("word error rate (%)")
    ax.set_title("Test WER by source length")
    ax.grid(True, alpha=0.3)
    counts = ax.twinx()
    counts.bar(frame.source_length, frame.sources, color="grey", alpha=0.15)
    counts.set_ylabel("test sources")
    ax.set_zorder(counts.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(fontsize="small")
    fig.tight_layout()
    save(fig, path)
