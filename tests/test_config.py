from pathlib import Path

import pytest
import yaml

from seqlab.config import load_params
from seqlab.errors import SeqLabError

from helpers import REPO


def write_params(tmp_path: Path, change) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    change(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def error_of(path: Path) -> str:
    with pytest.raises(SeqLabError) as info:
        load_params(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_repository_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "shakespeare"
    assert params.tokenize.kind in {"word", "char", "bpe"}
    assert params.validate_.max_oov_rate > 0


def test_unknown_key_is_named(tmp_path):
    path = write_params(tmp_path, lambda p: p["vocab"].update(min_frq=3))
    assert error_of(path) == f"{path}: vocab.min_frq: unknown key"


def test_unknown_section_is_named(tmp_path):
    path = write_params(tmp_path, lambda p: p.update(trian={"tokens": 3}))
    assert error_of(path) == f"{path}: trian: unknown key"


def test_wrong_type_is_named(tmp_path):
    path = write_params(tmp_path, lambda p: p["vocab"].update(min_freq="two"))
    message = error_of(path)
    assert message.startswith(f"{path}: vocab.min_freq: ") and "'two'" in message


def test_unknown_tokenizer_is_named(tmp_path):
    path = write_params(tmp_path, lambda p: p["tokenize"].update(kind="sentencepiece"))
    message = error_of(path)
    assert message.startswith(f"{path}: tokenize.kind: ") and "'word', 'char' or 'bpe'" in message


def test_missing_key_is_named(tmp_path):
    path = write_params(tmp_path, lambda p: p["validate"].pop("max_oov_rate"))
    assert error_of(path) == f"{path}: validate.max_oov_rate: missing key"


def test_out_of_range_and_cross_field_checks(tmp_path):
    assert "vocab.min_freq" in error_of(write_params(tmp_path, lambda p: p["vocab"].update(min_freq=0)))
    both = lambda p: p["data"].update(valid_fraction=0.6, test_fraction=0.5)  # noqa: E731
    assert "valid_fraction + test_fraction" in error_of(write_params(tmp_path, both))
    bounds = lambda p: p["validate"].update(min_tokens=10, max_tokens=5)  # noqa: E731
    assert "min_tokens must not exceed max_tokens" in error_of(write_params(tmp_path, bounds))
    no_test = lambda p: p["data"].update(test_plays=[])  # noqa: E731
    assert "valid_plays and test_plays each need at least one play" in error_of(write_params(tmp_path, no_test))
    bad_regex = lambda p: p["tokenize"].update(pattern="(")  # noqa: E731
    assert "tokenize.pattern: not a valid regular expression" in error_of(write_params(tmp_path, bad_regex))
    empty = lambda p: p["tokenize"].update(pattern=r"\w*")  # noqa: E731
    assert "tokenize.pattern: the pattern matches the empty string" in error_of(write_params(tmp_path, empty))


def test_unknown_play_is_named(tmp_path):
    path = write_params(tmp_path, lambda p: p["data"].update(test_plays=["hamelt"]))
    message = error_of(path)
    assert message.startswith(f"{path}: data.test_plays: unknown play 'hamelt'") and "hamlet" in message


def test_missing_and_malformed_files(tmp_path):
    assert error_of(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: file not found"
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    assert error_of(bad).startswith(f"{bad}: not valid YAML")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    assert "expected a mapping" in error_of(scalar)


def test_ngram_grid_checks(tmp_path):
    too_high = lambda p: p["ngram"].update(orders=[2, 7])  # noqa: E731
    assert error_of(write_params(tmp_path, too_high)).endswith("ngram: orders must lie in 1..max_order=5 (got 7)")
    zero = lambda p: p["ngram"].update(orders=[0])  # noqa: E731
    assert "orders must lie in 1..max_order=5 (got 0)" in error_of(write_params(tmp_path, zero))
    bad_k = lambda p: p["ngram"].update(addk_k=0.0)  # noqa: E731
    assert "ngram.addk_k: Input should be greater than 0 (got 0.0)" in error_of(write_params(tmp_path, bad_k))
    unknown = lambda p: p["ngram"].update(estimators=["mkn", "witten-bell"])  # noqa: E731
    assert "ngram.estimators: unknown estimator 'witten-bell'" in error_of(write_params(tmp_path, unknown))
    for memory, message in (("lots", "expected bytes or a size such as 512M or 2G (got 'lots')"),
                            ("512K", "at least 1M is needed (got '512K')")):
        small = lambda p: p["ngram"].update(memory=memory)  # noqa: E731
        assert f"ngram.memory: {message}" in error_of(write_params(tmp_path, small))
    first = lambda p: p["ngram"].update(cutoffs=[1, 1])  # noqa: E731
    assert "ngram.cutoffs: unigrams are never pruned" in error_of(write_params(tmp_path, first))
    down = lambda p: p["ngram"].update(cutoffs=[0, 2, 1])  # noqa: E731
    assert "non-decreasing (got [0, 2, 1])" in error_of(write_params(tmp_path, down))


@pytest.mark.parametrize("section, change, expected", [
    ("model", {"attention": "luong"}, "params.yaml: model.attention: Input should be 'none', 'dot', 'general', 'additive' or 'multihead' (got 'luong')"),
    ("model", {"tie_weights": True}, "params.yaml: model: tie_weights needs output: full (an adaptive softmax has no single decoder matrix)"),
    ("model", {"cutoffs": [8000, 2000]}, "params.yaml: model: cutoffs must be positive and increasing for output: adaptive (got [8000, 2000])"),
    ("model", {"attention": "multihead", "heads": 3}, "params.yaml: model: heads must divide the attention width 256 (got 3)"),
    ("model", {"memory": 0}, "params.yaml: model.memory: Input should be greater than or equal to 1 (got 0)"),
    ("train", {"device": "tpu"}, "params.yaml: train.device: Input should be 'auto', 'cpu' or 'cuda' (got 'tpu')"),
    ("train", {"lr_factor": 1.5}, "params.yaml: train.lr_factor: Input should be less than 1 (got 1.5)"),
    ("train", {"tokens": 0}, "params.yaml: train.tokens: Input should be greater than or equal to 1 (got 0)"),
    ("seq2seq_train", {"amp": "gpu"}, "params.yaml: seq2seq_train.amp: Input should be False, True or 'cpu' (got 'gpu')"),
    ("seq2seq_train", {"side_by_side": 0}, "params.yaml: seq2seq_train.side_by_side: a number of models at once (1 or more), or auto (got 0)"),
    ("seq2seq_train", {"side_by_side": "all"}, "params.yaml: seq2seq_train.side_by_side: a number of models at once (1 or more), or auto (got 'all')"),
])
def test_model_and_train_checks(tmp_path, section, change, expected):
    path = write_params(tmp_path, lambda p: p[section].update(change))
    assert error_of(path) == expected.replace("params.yaml", str(path))


def test_dotted_overrides_go_in_before_validation():
    params = load_params(REPO / "params.yaml", {"train.lr": 0.01, "tune.num_samples": 3})
    assert params.train.lr == 0.01 and params.tune.num_samples == 3
    with pytest.raises(SeqLabError, match=r"params.yaml: train.lr: Input should be greater than 0"):
        load_params(REPO / "params.yaml", {"train.lr": -1.0})
    with pytest.raises(SeqLabError, match=r"params.yaml: trian.lr: no section 'trian' to override"):
        load_params(REPO / "params.yaml", {"trian.lr": 0.01})


@pytest.mark.parametrize("change, expected", [
    (lambda p: p.update(baselines={}), "baselines: at least one entry (the leaderboard compares the tuned model with them)"),
    (lambda p: p["baselines"].update(Plain={"model": {"attention": "none"}}), "baselines.Plain: a name is lower-case letters, digits and _"),
    (lambda p: p["baselines"].update(lstm={"model": {"atention": "none"}}),
     "baselines.lstm.model.atention: unknown key (changes apply to model and train)"),
    (lambda p: p["baselines"].update(lstm={"tokenize": {"kind": "char"}}),
     "baselines.lstm.tokenize.kind: unknown key (changes apply to model and train)"),
    (lambda p: p["baselines"].update(lstm={"model": "none"}), "baselines.lstm.model: expected a mapping of keys to values"),
    (lambda p: p["baselines"].update(lstm={"train": {"lr": -1.0}}), "baselines.lstm: lr: Input should be greater than 0 (got -1.0)"),
    (lambda p: p["seq2seq_baselines"].update(broken={"attention": "bahdanau"}),
     "seq2seq_baselines.broken: attention: Input should be 'none', 'dot', 'general', 'additive' or 'multihead' (got 'bahdanau')"),
    (lambda p: p["seq2seq_baselines"].update(broken={"atention": "none"}), "seq2seq_baselines.broken.seq2seq.atention: unknown key"),
    (lambda p: p["hybrid"].update(ngram="kenlm"), "hybrid.ngram: 'kenlm' is neither best nor among ngram.estimators"),
    (lambda p: p["register"].update(on_new_test_set="always"), "register.on_new_test_set: Input should be 'challenger' or 'promote'"),
])
def test_baseline_hybrid_and_register_checks(tmp_path, change, expected):
    path = write_params(tmp_path, change)
    assert error_of(path).startswith(f"{path}: {expected}")


def test_baselines_are_the_tuned_sections_with_their_changes():
    from seqlab.config import dotted, with_changes

    params = load_params(REPO / "params.yaml")
    plain = with_changes(params, dotted(params.baselines["lstm"], "baselines.lstm"), "baselines.lstm")
    assert plain.model.attention == "none" and plain.model.hidden_dim == params.model.hidden_dim and plain.train == params.train


def test_sizes_read_as_binary_units():
    from seqlab.config import parse_size

    assert [parse_size(t) for t in ("1048576", "512M", "2G", "1.5g", "64KB")] == [1 << 20, 512 << 20, 2 << 30, 3 << 29, 64 << 10]
