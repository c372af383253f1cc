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
