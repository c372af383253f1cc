"""The n-gram build on Ray (ngram.engine: ray) gives the single-process model, survives a lost worker,
and fails in one line on bad input."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqlab.errors import SeqLabError
from seqlab.ngram import count, estimate, prune
from seqlab.ngram.ray_engine import FAULT_ENV, count_on_ray, estimate_on_ray
from seqlab.scoring import read_eval_set
from seqlab.vocab import BOS, build_vocab

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, object]:
    """Zipfian text: 2,000 lines of up to 14 words over 200 words."""
    rng = np.random.default_rng(0)
    words = np.array([f"w{i}" for i in range(200)])
    p = 1 / np.arange(1, 201)
    lines = [" ".join(rng.choice(words, size=rng.integers(0, 15), p=p / p.sum())) for _ in range(2000)]
    path = tmp_path_factory.mktemp("ray_corpus") / "train.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, build_vocab([line.split() for line in lines], min_freq=2)


def single_process(path, vocab, order, cutoffs=()):
    segments = read_eval_set(path, vocab, 0).segments
    return prune(count(segments, order, len(vocab)), list(cutoffs), len(vocab))


def assert_same_model(got, want):
    assert got.order == want.order
    np.testing.assert_allclose(got.params["discounts"], want.params["discounts"], rtol=1e-12)
    for k in range(want.order):
        assert np.array_equal(got.tables[k].keys, want.tables[k].keys)
        assert np.array_equal(got.tables[k].counts, want.tables[k].counts)
        np.testing.assert_allclose(got.logp[k], want.logp[k], rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.logbo[k], want.logbo[k], rtol=0, atol=1e-12)


def test_the_ray_build_is_the_single_process_model(cluster, corpus, tmp_path):
    path, vocab = corpus
    counted = count_on_ray(path, vocab, 4, 1 << 20, [], parts=3, shard_bytes=4000, progress=False)
    assert counted.shards > 5 and counted.parts == 3
    for order in (1, 2, 4):
        tables = single_process(path, vocab, order)
        assert all(np.array_equal(a.keys, b.keys) and np.array_equal(a.counts, b.counts)
                   for a, b in zip(counted.tables(order), tables))
        for estimator in ("kn", "mkn"):
            want = estimate(estimator, tables, len(vocab), vocab.index[BOS])
            got = estimate_on_ray(counted, estimator, order, tmp_path / f"{estimator}-{order}", progress=False)
            assert_same_model(got, want)
    files = sorted(p.relative_to(tmp_path / "mkn-4").as_posix() for p in (tmp_path / "mkn-4").rglob("*.parquet"))
    assert files == ["order=1/part-00000.parquet"] + [f"order={k}/part-{p:05d}.parquet" for k in (2, 3, 4) for p in range(3)]
    trigrams = pd.read_parquet(tmp_path / "mkn-4" / "order=3")
    assert list(trigrams.columns) == ["w0", "w1", "w2", "count", "logp", "logbo"]
    assert len(trigrams) == len(want.tables[2]) and trigrams["count"].sum() == want.tables[2].counts.sum()


def test_the_ray_counts_apply_the_cutoffs(cluster, corpus):
    path, vocab = corpus
    counted = count_on_ray(path, vocab, 3, 1 << 20, [0, 1, 2], parts=2, shard_bytes=8000, progress=False)
    tables = single_process(path, vocab, 3, [0, 1, 2])
    assert all(np.array_equal(a.keys, b.keys) and np.array_equal(a.counts, b.counts) for a, b in zip(counted.tables(3), tables))


def test_a_worker_lost_mid_pass_is_retried_and_the_model_is_the_same(cluster, corpus, tmp_path, monkeypatch):
    path, vocab = corpus
    monkeypatch.setenv(FAULT_ENV, str(tmp_path / "died"))  # the first merge task's worker exits
    counted = count_on_ray(path, vocab, 3, 1 << 20, [], parts=2, shard_bytes=8000, progress=False)
    assert (tmp_path / "died").exists()
    want = estimate("mkn", single_process(path, vocab, 3), len(vocab), vocab.index[BOS])
    assert_same_model(estimate_on_ray(counted, "mkn", 3, tmp_path / "mkn-3", progress=False), want)


def test_a_worker_lost_past_the_retries_is_one_line(cluster, corpus, tmp_path, monkeypatch):
    path, vocab = corpus
    monkeypatch.setenv(FAULT_ENV, str(tmp_path / "died"))
    with pytest.raises(SeqLabError) as failed:
        count_on_ray(path, vocab, 3, 1 << 20, [], parts=2, shard_bytes=8000, retries=0, progress=False)
    message = str(failed.value)
    assert message.startswith("ngram: merging 2 partition(s): a task failed after 0 retries: ")
    assert "\n" not in message


def test_a_shard_that_is_not_utf8_is_one_line_naming_the_file(cluster, corpus, tmp_path):
    path, vocab = corpus
    bad = tmp_path / "train.txt"
    bad.write_bytes(path.read_bytes() + b"w1 \xff w2\n")
    with pytest.raises(SeqLabError) as failed:
        count_on_ray(bad, vocab, 3, 1 << 20, [], parts=2, shard_bytes=8000, progress=False)
    size = len(path.read_bytes())
    assert str(failed.value).endswith(f"{bad}: not UTF-8 text (invalid byte at offset {size + 3})")


def test_a_budget_too_small_for_one_ngram_is_one_line(cluster, corpus, tmp_path):
    path, vocab = corpus
    with pytest.raises(SeqLabError, match=r"ngram\.memory: 640 bytes cannot hold the .* windows of one order-2 n-gram"):
        count_on_ray(path, vocab, 2, 640, [], parts=2, shard_bytes=8000, progress=False)


def test_only_kneser_ney_is_estimated_on_the_cluster(cluster, corpus, tmp_path):
    path, vocab = corpus
    counted = count_on_ray(path, vocab, 2, 1 << 20, [], parts=2, shard_bytes=8000, progress=False)
    with pytest.raises(SeqLabError, match="estimates kn and mkn on the cluster, not 'jm'"):
        estimate_on_ray(counted, "jm", 2, tmp_path / "jm-2", progress=False)
    with pytest.raises(SeqLabError, match=r"order 3 was not counted \(counted up to 2\)"):
        estimate_on_ray(counted, "mkn", 3, tmp_path / "mkn-3", progress=False)
    assert not (tmp_path / "jm-2").exists() and not (tmp_path / "mkn-3").exists()


def test_a_pruned_model_on_ray_is_the_single_process_one_and_saves_alike(cluster, corpus, tmp_path):
    from seqlab.ngram.model_file import load_model, save_model

    path, vocab = corpus
    counted = count_on_ray(path, vocab, 4, 1 << 20, [0, 0, 1], parts=3, shard_bytes=4000, progress=False)
    for order in (2, 4):
        tables = single_process(path, vocab, order, [0, 0, 1])
        want = estimate("mkn", tables, len(vocab), vocab.index[BOS])
        got = estimate_on_ray(counted, "mkn", order, tmp_path / f"mkn-{order}", progress=False)
        assert_same_model(got, want)
        assert not any(np.isnan(p).any() for p in got.logp)  # no context left without mass by the cut-offs
        save_model(got, tmp_path / f"mkn-{order}.npz", vocab.sha256)
        assert_same_model(load_model(tmp_path / f"mkn-{order}.npz"), want)
        for a, b in zip(counted.tables(order), tables):
            assert (a.extended is None) == (b.extended is None) and (a.extended is None or np.array_equal(a.extended, b.extended))


def test_what_is_read_back_past_the_budget_is_spilled_and_is_the_same(cluster, corpus, tmp_path):
    from seqlab.ngram import spill
    from seqlab.ngram.ray_engine import read_model

    path, vocab = corpus
    counted = count_on_ray(path, vocab, 3, 1 << 20, [0, 0, 1], parts=2, shard_bytes=8000, progress=False)
    counted.memory = None
    in_memory = counted.tables(3)
    counted.memory = 1 << 10
    on_disk = counted.tables(3)
    assert all(spill.folder_of(table.keys) is None for table in in_memory)
    assert all(spill.folder_of(table.keys) is not None for table in on_disk[1:])
    for a, b in zip(on_disk, in_memory):
        for column in ("keys", "counts", "suffix", "first", "extended"):
            assert (getattr(a, column) is None) == (getattr(b, column) is None)
            assert getattr(a, column) is None or np.array_equal(getattr(a, column), getattr(b, column))
    want = estimate_on_ray(counted, "mkn", 3, tmp_path / "mkn-3", progress=False)  # spilled: memory 1K
    assert spill.folder_of(want.logp[2]) is not None
    got = read_model(tmp_path / "mkn-3", "mkn", 3, len(vocab), vocab.index[BOS])
    got.params = want.params
    assert spill.folder_of(got.logp[2]) is None
    assert_same_model(got, want)
