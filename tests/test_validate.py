import json

import pandas as pd

from seqlab.validate import expectations, run_suite


def tables(**overrides):
    stats = pd.DataFrame({"line": [0, 1, 2], "n_tokens": [3, 5, 4], "n_chars": [9, 20, 14], "n_control": [0, 0, 0]})
    frames = {
        "train.stats": stats,
        "valid.stats": stats.iloc[:2],
        "test.stats": stats.iloc[1:],
        "vocab": pd.DataFrame({"token": ["<unk>", "<s>", "</s>", "the", "cat"], "count": [0, 0, 0, 5, 2]}),
        "oov": pd.DataFrame({"split": ["valid", "test"], "oov_rate": [0.01, 0.02]}),
    }
    frames.update(overrides)
    return frames


def test_clean_data_passes_and_renders_docs(tmp_path):
    result, failures = run_suite(tables(), expectations(1, 10, 0.05), tmp_path / "docs")
    assert failures == [] and result["success"] is True
    json.dumps(result)
    assert (tmp_path / "docs" / "index.html").exists()
    assert list((tmp_path / "docs" / "validations").rglob("*.html"))
    assert sorted(result["tables"]) == ["oov", "test.stats", "train.stats", "valid.stats", "vocab"]


def test_each_failing_expectation_is_named(tmp_path):
    bad = tables(
        **{
            "test.stats": pd.DataFrame({"line": [], "n_tokens": [], "n_chars": [], "n_control": []}, dtype="int64"),
            "valid.stats": pd.DataFrame({"line": [0, 1], "n_tokens": [3, 50], "n_chars": [9, 99], "n_control": [0, 2]}),
            "vocab": pd.DataFrame({"token": ["<unk>", "</s>", "the", "the", "ca\x07t"], "count": [0, 0, 5, 5, 1]}),
            "oov": pd.DataFrame({"split": ["valid", "test"], "oov_rate": [0.01, 0.2]}),
        }
    )
    result, failures = run_suite(bad, expectations(1, 10, 0.05), tmp_path / "docs")
    assert result["success"] is False
    described = sorted(map(str, failures))
    assert described == [
        "oov: expect_column_values_to_be_between(column='oov_rate', min_value=0, max_value=0.05) failed for 1 of 2 rows (e.g. 0.2)",
        "test.stats: expect_table_row_count_to_be_between(min_value=1) failed (observed 0)",
        "valid.stats: expect_column_values_to_be_between(column='n_control', min_value=0, max_value=0) failed for 1 of 2 rows (e.g. 2)",
        "valid.stats: expect_column_values_to_be_between(column='n_tokens', min_value=1, max_value=10) failed for 1 of 2 rows (e.g. 50)",
        "vocab: expect_column_distinct_values_to_contain_set(column='token', value_set=['<unk>', '<s>', '</s>']) failed: missing '<s>'",
        "vocab: expect_column_values_to_be_unique(column='token') failed for 2 of 5 rows (e.g. 'the', 'the')",
        "vocab: expect_column_values_to_not_match_regex(column='token', regex='[\\\\x00-\\\\x1f\\\\x7f-\\\\x9f]') failed for 1 of 5 rows (e.g. 'ca\\x07t')",
    ]
    assert (tmp_path / "docs" / "index.html").exists()


def test_a_missing_column_is_reported_not_crashed(tmp_path):
    broken = tables(**{"train.stats": tables()["train.stats"].drop(columns="n_control")})
    _, failures = run_suite(broken, expectations(1, 10, 0.05), tmp_path / "docs")
    assert [str(f) for f in failures] == [
        "train.stats: expect_column_values_to_be_between(column='n_control', min_value=0, max_value=0)"
        ' could not be evaluated: Error: The column "n_control" in BatchData does not exist.'
    ]


def pair_tables(**overrides):
    from seqlab.vocab import PAIR_SPECIALS

    pairs = pd.DataFrame({"source_tokens": [3, 5], "target_tokens": [3, 4], "text": ["c a t K AE T", "h o u s e HH AW S"]})
    vocab = pd.DataFrame({"token": [*PAIR_SPECIALS, "a"], "count": [0, 0, 0, 0, 3]})
    frames = {"train.pairs": pairs, "valid.pairs": pairs, "test.pairs": pairs, "source.vocab": vocab, "target.vocab": vocab,
              "oov": pd.DataFrame({"split": ["valid", "test"], "source_oov_rate": [0.0, 0.001], "target_oov_rate": [0.0, 0.0]})}
    frames.update(overrides)
    return frames


def test_the_pairs_suite_passes_clean_pairs_and_names_what_breaks(tmp_path):
    from seqlab.validate import pair_expectations

    result, failures = run_suite(pair_tables(), pair_expectations(6, 0.01), tmp_path / "docs")
    assert failures == [] and result["success"] is True
    bad = pair_tables(**{"test.pairs": pd.DataFrame({"source_tokens": [3, 0], "target_tokens": [9, 2], "text": ["a b c X", "\x07 Y"]}),
                         "oov": pd.DataFrame({"split": ["valid", "test"], "source_oov_rate": [0.0, 0.2], "target_oov_rate": [0.0, 0.0]})})
    _, failures = run_suite(bad, pair_expectations(6, 0.01), tmp_path / "docs2")
    named = sorted(f"{f.table}: {f.expectation} {f.kwargs.get('column', '')}" for f in failures)
    assert named == ["oov: expect_column_values_to_be_between source_oov_rate",
                     "test.pairs: expect_column_values_to_be_between source_tokens",
                     "test.pairs: expect_column_values_to_be_between target_tokens",
                     "test.pairs: expect_column_values_to_not_match_regex text"]
