import pytest

from seqlab.errors import SeqLabError
from seqlab.vocab import SPECIALS, build_vocab, load_vocab, save_vocab

TRAIN = [["b", "a", "c", "a"], ["b", "d", "e", "e"], ["a", "<s>"]]


def test_order_is_frequency_then_code_point():
    vocab = build_vocab(TRAIN)
    assert vocab.tokens == SPECIALS + ("a", "b", "e", "c", "d")
    assert vocab.counts == (0, 0, 0, 3, 2, 2, 1, 1)


def test_min_freq_and_max_size_including_specials():
    assert build_vocab(TRAIN, min_freq=2).tokens == SPECIALS + ("a", "b", "e")
    assert build_vocab(TRAIN, max_size=5).tokens == SPECIALS + ("a", "b")


def test_encode_maps_unknown_tokens_to_unk_and_oov_rate():
    vocab = build_vocab(TRAIN, min_freq=2)
    assert vocab.encode(["a", "zzz", "e"]) == [3, 0, 5]
    assert vocab.decode([3, 0]) == ["a", "<unk>"]
    assert vocab.oov([["a", "c"], ["zzz", "b", "e"]]) == (2, 5)


def test_hash_follows_the_mapping():
    assert build_vocab(TRAIN).sha256 == build_vocab(list(reversed(TRAIN))).sha256
    assert build_vocab(TRAIN).sha256 != build_vocab(TRAIN, min_freq=2).sha256


def test_save_and_load(tmp_path):
    vocab = build_vocab(TRAIN)
    save_vocab(vocab, tmp_path / "vocab", min_freq=1)
    assert load_vocab(tmp_path / "vocab") == vocab
    tsv = tmp_path / "vocab" / "vocab.tsv"
    tsv.write_text(tsv.read_text().replace("a\t3", "z\t3"))
    with pytest.raises(SeqLabError, match="does not match vocab.json"):
        load_vocab(tmp_path / "vocab")
