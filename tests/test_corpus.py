import pytest

from seqlab.corpus import SPLITS, load_directory, load_file, load_shakespeare, parse_play, shakespeare_plays
from seqlab.errors import SeqLabError

PLAY = """# The Test

## ACT I

### SCENE I. A room.

_Enter HAMLET and HORATIO, with
attendants_

**HAMLET**  
Who's there?  
Stand, and \\[unfold] yourself.

**HORATIO**  
_\\[Aside]_  
Friends to this ground.

And liegemen to the Dane. \\[Draws.]

_Exeunt_
"""


def test_parse_play_rules():
    assert parse_play(PLAY) == [
        "Who's there? Stand, and yourself.",
        "Friends to this ground.",
        "And liegemen to the Dane.",
    ]


def test_embedded_corpus_splits_by_whole_play():
    plays = shakespeare_plays()
    assert len(plays) == 38 and "hamlet" in plays
    corpus = load_shakespeare(["julius-caesar"], ["macbeth", "othello"])
    assert corpus.sources["valid"] == ["julius-caesar"]
    assert corpus.sources["test"] == ["macbeth", "othello"]
    assert len(corpus.sources["train"]) == 35 and "macbeth" not in corpus.sources["train"]
    assert corpus.splits["test"][0] == "When shall we three meet again In thunder, lightning, or in rain?"
    text = "\n".join(corpus.splits["train"])
    assert "**" not in text and "_" not in text and "[" not in text and "#" not in text


def test_unknown_play():
    with pytest.raises(SeqLabError, match="valid_plays: unknown play 'hamelt'"):
        load_shakespeare(["hamelt"], ["macbeth"])


def test_directory_corpus_normalises_whitespace(tmp_path, corpus_dir):
    (corpus_dir / "valid.txt").write_text("  the\tcat  sat \r\n\n   \nthe dog ran\n", encoding="utf-8")
    corpus = load_directory(corpus_dir)
    assert corpus.splits["valid"] == ["the cat sat", "the dog ran"]
    assert len(corpus.splits["train"]) == 20


def test_single_file_split_by_ratio_and_seed(tmp_path):
    path = tmp_path / "states.txt"
    lines = [f"s{i % 7} s{i % 3} s{i % 5}" for i in range(100)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    a = load_file(path, 0.1, 0.2, seed=1)
    assert [len(a.splits[s]) for s in SPLITS] == [70, 10, 20]
    assert sorted(sum((a.splits[s] for s in SPLITS), [])) == sorted(lines)
    assert load_file(path, 0.1, 0.2, seed=1) == a
    assert load_file(path, 0.1, 0.2, seed=2).splits["test"] != a.splits["test"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "split 'train' has no sequences"),
        (b"caf\xe9\n", "not UTF-8 text (invalid byte at offset 3)"),
        (b"\x7fELF\x02\x01\x00\x00", "binary file (NUL byte at offset 6)"),
    ],
)
def test_bad_corpus_files_name_the_file(corpus_dir, content, message):
    (corpus_dir / "train.txt").write_bytes(content)
    with pytest.raises(SeqLabError) as info:
        load_directory(corpus_dir)
    assert str(corpus_dir / "train.txt") in str(info.value) and message in str(info.value)


def test_a_byte_order_mark_is_not_read_as_text(corpus_dir):
    """An editor's UTF-8 byte-order mark would otherwise stick to the first word as a token of its own."""
    text = (corpus_dir / "train.txt").read_text(encoding="utf-8")
    (corpus_dir / "train.txt").write_text("\ufeff" + text, encoding="utf-8")
    corpus = load_directory(corpus_dir)
    assert corpus.splits["train"][0] == text.splitlines()[0]
    assert not any("\ufeff" in line for line in corpus.splits["train"])


def test_missing_corpus(tmp_path):
    with pytest.raises(SeqLabError, match="corpus directory not found"):
        load_directory(tmp_path / "nope")
    with pytest.raises(SeqLabError, match="file not found"):
        load_file(tmp_path / "nope.txt", 0.1, 0.1, 0)
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(SeqLabError, match="no sequences"):
        load_file(tmp_path / "blank.txt", 0.1, 0.1, 0)


def test_tiny_file_leaves_a_split_empty(tmp_path):
    (tmp_path / "two.txt").write_text("a b\nc d\n")
    with pytest.raises(SeqLabError, match="split 'valid' has no sequences"):
        load_file(tmp_path / "two.txt", 0.1, 0.1, 0)
