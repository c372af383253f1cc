import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from seqlab.corpus import normalize
from seqlab.errors import SeqLabError
from seqlab.tokenize import (
    SPACE,
    WordTokenizer,
    fit_tokenizer,
    format_stream,
    line_stats,
    load_tokenizer,
    read_stream,
    save_tokenizer,
    tokenize_lines,
)
from seqlab.vocab import build_vocab

TRAIN = ["To be, or not to be: that is the question.", "Whether 'tis nobler in the mind to suffer"] * 20


def fit(kind, **overrides):
    options = {"lowercase": False, "pattern": WordTokenizer.pattern, "bpe_vocab_size": 300} | overrides
    return fit_tokenizer(kind, TRAIN, **options)


BPE = fit("bpe")


def example_each(values):
    """Hypothesis examples that always run, whatever it generates."""
    def decorate(test):
        for value in reversed(values):
            test = example(value)(test)
        return test
    return decorate


def test_word_tokens_and_lowercasing():
    assert fit("word").tokenize("O'er the shame-faced moon, 'tis late!") == [
        "O'er", "the", "shame-faced", "moon", ",", "'", "tis", "late", "!",
    ]
    assert fit("word", lowercase=True).tokenize("To BE") == ["to", "be"]


def test_states_split_on_whitespace():
    tokenizer = fit("word", pattern=r"\S+")
    assert tokenizer.tokenize("login view_item add-to-cart pay") == ["login", "view_item", "add-to-cart", "pay"]


def test_char_tokens_round_trip():
    tokenizer = fit("char")
    tokens = tokenizer.tokenize("to be, or")
    assert tokens == ["t", "o", SPACE, "b", "e", ",", SPACE, "o", "r"]
    assert tokenizer.detokenize(tokens) == "to be, or"


def test_bpe_learns_from_train_only_and_round_trips():
    tokenizer = fit("bpe")
    line = "To be, or not to be: that is the question."
    tokens = tokenizer.tokenize(line)
    assert len(tokens) < len(line) / 2  # merges were learnt from train
    assert tokenizer.detokenize(tokens) == line
    unseen = "Zebras quietly vex jumpy wolves ü"
    assert tokenizer.detokenize(tokenizer.tokenize(unseen)) == unseen  # byte-level: nothing is lost
    assert fit("bpe").to_dict() == tokenizer.to_dict()  # deterministic


@pytest.mark.parametrize("kind", ["word", "char", "bpe"])
def test_tokenizer_file_round_trip(tmp_path, kind):
    tokenizer = fit(kind, lowercase=True)
    save_tokenizer(tokenizer, tmp_path / "tokenizer.json")
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert loaded.to_dict() == tokenizer.to_dict()
    assert tokenize_lines(loaded, TRAIN[:2]) == tokenize_lines(tokenizer, TRAIN[:2])


def test_unknown_tokenizer():
    with pytest.raises(SeqLabError, match="unknown tokenizer 'sentencepiece'"):
        fit("sentencepiece")


def test_corrupt_tokenizer_file(tmp_path):
    (tmp_path / "t.json").write_text('{"kind": "bpe", "lowercase": false, "model": {"nonsense": 1}}')
    with pytest.raises(SeqLabError, match="t.json: not a SeqLab tokenizer file"):
        load_tokenizer(tmp_path / "t.json")


def test_stream_file_round_trip_and_refuses_whitespace_tokens(tmp_path):
    tokens = [["a", "b"], [], ["c"]]
    (tmp_path / "s.txt").write_text(format_stream(tokens), encoding="utf-8")
    assert read_stream(tmp_path / "s.txt") == tokens
    with pytest.raises(SeqLabError, match="line 2: the tokenizer produced an empty token or one holding whitespace"):
        format_stream([["a"], ["b c"]])


def test_line_stats_count_tokens_chars_and_control_characters():
    lines = ["ab cd", "x\x07y"]
    stats = line_stats(lines, [["ab", "cd"], ["x", "y"]])
    assert stats.to_dict("list") == {"line": [0, 1], "n_tokens": [2, 2], "n_chars": [5, 3], "n_control": [0, 1]}


# --- properties over any text ------------------------------------------------------------------------

# every code point a UTF-8 text file can hold; a NUL makes it a binary file, which the corpus reader refuses
ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=80)
CORNERS = ["", " ", "a\u2581b c", "\u2581 \u2581\u2581", "<U+2581>", "x\x01\x1c\u2028\u00a0\r\ny", "ǅ ß ﬁ İ", "😀\u200d👍"]


def through_the_pipeline(tokenizer, text: str) -> tuple[str, list[str]]:
    """What the stages do to a line: normalise it, tokenize, write and read the token stream, map to ids and back."""
    line = normalize(text)
    tokens = tokenizer.tokenize(line)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.txt"
        path.write_text(format_stream([tokens]), encoding="utf-8")
        (read,) = read_stream(path)
    vocab = build_vocab([read])
    return line, vocab.decode(vocab.encode(read))


@settings(max_examples=300)
@given(ANY_TEXT)
@example_each(CORNERS)
def test_char_tokens_round_trip_any_text(text):
    line, tokens = through_the_pipeline(fit("char"), text)
    assert fit("char").detokenize(tokens) == line


@given(ANY_TEXT)
@example_each(CORNERS)
def test_word_and_bpe_tokenizers_take_any_text(text):
    for tokenizer in (fit("word"), fit("word", pattern=r"\S+"), BPE):
        line, tokens = through_the_pipeline(tokenizer, text)
        assert isinstance(tokenizer.detokenize(tokens), str)
    assert BPE.detokenize(tokens) == line  # byte-level: nothing is lost, not even what train never had


def test_a_pattern_with_groups_still_gives_whole_matches():
    """Capture groups in tokenize.pattern change what re.findall returns (tuples); tokens stay the matches."""
    grouped, plain = WordTokenizer(r"(\w)(\w*)"), WordTokenizer(r"\w+")
    assert grouped.tokenize("the cat sat") == plain.tokenize("the cat sat") == ["the", "cat", "sat"]
    assert WordTokenizer(r"(a|b)+").tokenize("abba c ab") == ["abba", "ab"]
