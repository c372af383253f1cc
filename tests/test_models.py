"""The neural models: causality, the attention cache, incremental decoding, the output layers."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers import model_config, project_params
from seqlab.errors import SeqLabError
from seqlab.models import build, config_from_params, count_parameters, matched_ff_dim, output_layer
from seqlab.models.attention import band_mask

TINY = model_config(40, embed_dim=16, hidden_dim=16, layers=2, heads=4, memory=5, cutoffs=(8, 20))
VARIANTS = [
    *(replace(TINY, attention=a) for a in ("none", "dot", "general", "additive", "multihead")),
    replace(TINY, rnn="gru"),
    replace(TINY, output="full", tie_weights=True),
    replace(TINY, kind="transformer", ff_dim=32),
    replace(TINY, weight_drop=0.5),
    replace(TINY, kind="feedforward", memory=2),
    replace(TINY, kind="feedforward", memory=2, hidden_dim=24, output="full", tie_weights=True),
]
IDS = [f"{c.kind}-{c.rnn}-{c.attention}-{c.output}" + ("-weight_drop" if c.weight_drop else "") for c in VARIANTS]


def model_of(config):
    torch.manual_seed(0)
    return build(config).eval()


def features(model, ids, window):
    state, pieces = model.init_state(ids.shape[0]), []
    for start in range(0, ids.shape[1], window):
        out, state, _ = model(ids[:, start : start + window], state)
        pieces.append(out)
    return torch.cat(pieces, dim=1)


def test_the_feedforward_model_reads_itself_and_memory_tokens_before_it_and_nothing_older():
    model = model_of(replace(TINY, kind="feedforward", memory=2))
    ids = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(1))
    base = features(model, ids, 5)
    for changed_at, moved in ((6, range(6, 9)), (0, range(0, 3))):
        changed = ids.clone()
        changed[:, changed_at] = (changed[:, changed_at] + 1) % 40
        differs = (features(model, changed, 5) - base).abs().amax(dim=(0, 2)) > 1e-6
        assert differs.nonzero().flatten().tolist() == list(moved)  # the position itself and the next two only


def test_band_mask_allows_itself_and_memory_before_it():
    allowed = band_mask(queries=3, keys=5, memory=2)  # queries are key positions 2, 3, 4
    assert allowed.int().tolist() == [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1]]


@pytest.mark.parametrize("config", VARIANTS, ids=IDS)
def test_no_position_sees_the_future(config):
    model = model_of(config)
    ids = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 40
    before, after = features(model, ids, 12), features(model, changed, 12)
    assert torch.allclose(before[:, :7], after[:, :7], atol=1e-6)
    assert not torch.allclose(before[:, 7:], after[:, 7:])


@pytest.mark.parametrize("config", VARIANTS, ids=IDS)
def test_token_by_token_equals_windows_equals_one_pass(config):
    """The carried state (recurrent state + attention cache, or the Transformer's per-layer key/value
    cache) makes window edges invisible."""
    model = model_of(config)
    ids = torch.randint(0, 40, (3, 23), generator=torch.Generator().manual_seed(2))
    whole = features(model, ids, 23)
    assert torch.allclose(whole, features(model, ids, 1), atol=1e-5)
    assert torch.allclose(whole, features(model, ids, 4), atol=1e-5)


def test_attention_cache_keeps_the_last_memory_states_and_attends_across_windows():
    model = model_of(TINY)
    state = model.init_state(1)
    _, state, weights = model(torch.arange(3).unsqueeze(0), state, need_weights=True)
    assert state["keys"].shape == (1, 3, 16) and weights.shape == (1, 3, 3)
    _, state, weights = model(torch.arange(3, 10).unsqueeze(0), state, need_weights=True)
    assert state["keys"].shape == (1, 5, 16) and weights.shape == (1, 7, 3 + 7)
    # the first position of the second window attends to the previous window's states
    assert weights[0, 0, :3].sum() > 0 and torch.allclose(weights.sum(-1), torch.ones(1, 7))
    assert (weights[0, 0, 4:] == 0).all()  # ... and not to later positions


def test_the_transformer_caches_each_layers_last_memory_keys_and_values():
    model = model_of(replace(TINY, kind="transformer", ff_dim=32, layers=2))
    state = model.init_state(1)
    _, state, weights = model(torch.arange(3).unsqueeze(0), state, need_weights=True)
    assert set(state) == {"keys0", "values0", "keys1", "values1"} and weights.shape == (1, 3, 3)
    _, state, weights = model(torch.arange(3, 10).unsqueeze(0), state, need_weights=True)
    heads = TINY.heads
    assert all(v.shape == (1, heads, TINY.memory, 16 // heads) for v in state.values()) and weights.shape == (1, 7, 3 + 7)
    assert weights[0, 0, :3].sum() > 0 and torch.allclose(weights.sum(-1), torch.ones(1, 7))
    assert (weights[0, 0, 4:] == 0).all() and (weights[0, -1, : 9 - TINY.memory] == 0).all()  # causal, within memory
    # one more token costs one token's work: only the new position goes through the layers
    _, after, _ = model(torch.tensor([[10]]), state)
    assert all(v.shape[2] == TINY.memory for v in after.values())



def test_the_transformers_position_scores_are_learnt_from_alibi_and_old_checkpoints_keep_alibi():
    from seqlab.models.transformer import alibi_bias

    config = replace(TINY, kind="transformer", ff_dim=32)
    model = model_of(config)
    assert torch.equal(model.position_bias.detach(), alibi_bias(TINY.heads, TINY.memory))
    assert alibi_bias(4, 2).tolist() == [[0, -0.25, -0.5], [0, -0.0625, -0.125], [0, -2 ** -6, -2 ** -5], [0, -2 ** -8, -2 ** -7]]
    bias = model.bias(3, 3 + TINY.memory, "cpu")  # query i sits at key 5 + i: distance 5 + i - key
    assert bias[1, 2, 7] == 0 and bias[1, 2, 6] == model.position_bias[1, 1] and bias[1, 2, 2] == model.position_bias[1, 5]
    assert torch.isinf(bias[:, 2, :2]).all() and torch.isinf(bias[:, 0, 6:]).all()  # beyond memory; the future
    ids = torch.randint(0, 40, (2, 9), generator=torch.Generator().manual_seed(3))
    features(model, ids, 9).pow(2).sum().backward()
    assert model.position_bias.grad.abs().sum() > 0  # learnt
    with torch.no_grad():
        model.position_bias.add_(1.0)
    weights = {k: v for k, v in model_of(config).state_dict().items() if k != "position_bias"}  # saved before it existed
    model.load_state_dict(weights)
    assert torch.equal(model.position_bias.detach(), alibi_bias(TINY.heads, TINY.memory))


def test_the_transformers_two_ways_of_attending_agree():
    """The fused kernel (what CUDA takes) and the scores written out (CPU): the same context and
    gradients, the band's -inf outside included."""
    from seqlab.models.transformer import attend

    model = model_of(replace(TINY, kind="transformer", ff_dim=32))
    bias = model.bias(5, 5 + TINY.memory, "cpu").detach()
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, TINY.heads, n, 4, generator=generator) for n in (5, 5 + TINY.memory, 5 + TINY.memory))
    results = []
    for fused in (True, False):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        context, weights = attend(*leaves, bias, fused)
        context.pow(2).sum().backward()
        results.append([context, *(t.grad for t in leaves)])
        assert (weights is None) == fused
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*results))

@pytest.mark.parametrize("output", ["full", "adaptive"])
def test_output_distributions_sum_to_one_and_agree_with_target_log_probs(output):
    model = model_of(replace(TINY, output=output))
    ids = torch.randint(0, 40, (2, 9), generator=torch.Generator().manual_seed(3))
    out, _, _ = model(ids, model.init_state(2))
    log_probs = model.output.log_probs(out)
    assert log_probs.shape == (2, 9, 40)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 9), atol=1e-5)
    targets = torch.roll(ids, -1, dims=1)
    assert torch.allclose(model.output.target_log_probs(out, targets), log_probs.gather(2, targets.unsqueeze(-1)).squeeze(-1), atol=1e-5)


def test_weight_drop_masks_the_recurrent_weights_in_training_only(tmp_path):
    from seqlab.models.checkpoint import load_checkpoint, save_checkpoint

    config = replace(TINY, dropout_embed=0.0, dropout_rnn=0.0, dropout_out=0.0, weight_drop=0.5)
    model, plain = model_of(config), model_of(replace(config, weight_drop=0.0))
    masked = [name for name in model.state_dict() if "parametrizations" in name]
    assert masked == ["rnn.parametrizations.weight_hh_l0.original", "rnn.parametrizations.weight_hh_l1.original"]
    plain.load_state_dict({name.replace("parametrizations.", "").replace(".original", ""): value
                           for name, value in model.state_dict().items()})
    ids = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(0))
    assert torch.equal(features(model, ids, 12), features(plain, ids, 12))  # eval: the weights as they are
    save_checkpoint(tmp_path / "model.pt", model, "vocab")
    assert torch.equal(features(load_checkpoint(tmp_path / "model.pt", "vocab"), ids, 5), features(plain, ids, 5))
    model.train(), plain.train()
    first, second = features(model, ids, 12), features(model, ids, 12)
    assert not torch.allclose(first, second)  # a fresh mask per window ...
    assert torch.equal(features(plain, ids, 12), features(plain, ids, 12))  # ... and nothing else random here
    first.sum().backward()
    assert model.rnn.parametrizations.weight_hh_l0.original.grad.abs().sum() > 0


def test_tied_weights_share_the_embedding():
    model = model_of(replace(TINY, output="full", tie_weights=True))
    assert model.output.decoder.weight is model.embed.weight
    assert count_parameters(model) < count_parameters(model_of(replace(TINY, output="full")))


def test_transformer_baseline_matches_the_parameter_count():
    config = replace(TINY, attention="dot")
    lstm = count_parameters(build(config))
    ff = matched_ff_dim(config)
    transformer = count_parameters(build(replace(config, kind="transformer", ff_dim=ff)))
    per_unit = count_parameters(build(replace(config, kind="transformer", ff_dim=ff + 1))) - transformer
    assert abs(transformer - lstm) <= per_unit / 2 + 1


def test_multihead_needs_heads_dividing_the_width():
    with pytest.raises(ValueError, match="not divisible"):
        build(replace(TINY, attention="multihead", heads=3))


@pytest.mark.parametrize("changes", [{}, {"attention": "multihead"}, {"rnn": "gru", "attention": "additive"},
                                     {"kind": "transformer", "ff_dim": 24}])
def test_a_long_context_is_read_window_by_window_with_the_answer_of_reading_it_whole(changes):
    """A served request may be any length: read in windows with the state carried, memory stays bounded
    by the window and the model's memory, and the next-token distribution is the one-pass answer."""
    from seqlab.models.neural_lm import NeuralLM

    torch.manual_seed(0)
    model = build(replace(TINY, **changes)).eval()
    ids = torch.randint(0, TINY.vocab_size, (1, 700), generator=torch.Generator().manual_seed(1))[0].tolist()
    whole = NeuralLM(model, window=10_000).next_log_probs(ids)
    windowed = NeuralLM(model, window=16).next_log_probs(ids)
    assert np.exp(windowed).sum() == pytest.approx(1.0, abs=1e-6)
    assert np.abs(windowed - whole).max() < 1e-5
    # the answer depends on the context, and a short context is read the same way
    short = ids[-5:]
    assert np.abs(NeuralLM(model, window=2).next_log_probs(short) - NeuralLM(model, window=10_000).next_log_probs(short)).max() < 1e-5
    assert np.abs(NeuralLM(model, window=16).next_log_probs(short) - whole).max() > 1e-4


@pytest.mark.parametrize("changes", [{}, {"attention": "none"}, {"kind": "transformer", "ff_dim": 24}])
def test_the_next_token_distribution_is_what_the_scoring_path_assigns(changes):
    """Prediction and scoring read a context the same way, window by window: p(t | context) from
    ``next_log_probs`` is the probability ``log_probs`` gives t after that context."""
    from seqlab.models.neural_lm import NeuralLM, stream_log_probs

    torch.manual_seed(0)
    model = build(replace(TINY, **changes)).eval()
    context = torch.randint(0, TINY.vocab_size, (45,), generator=torch.Generator().manual_seed(2)).tolist()
    predicted = NeuralLM(model, window=16).next_log_probs(context)
    for token in (0, 7, 39):
        scored = stream_log_probs(model, np.array([*context, token]), batch_size=1, window=16)
        assert predicted[token] == pytest.approx(scored[-1], abs=1e-5)
    with pytest.raises(SeqLabError, match="needs a context of at least one token"):
        NeuralLM(model).next_log_probs([])


@pytest.mark.parametrize("cutoffs, vocab_size, output, kept, note", [
    ([2000, 8000], 16790, "adaptive", [2000, 8000], None),
    ([2000, 8000], 5000, "adaptive", [2000], "model.cutoffs [2000, 8000] do not fit the vocabulary of 5000: the adaptive softmax uses cut-offs [2000]"),
    ([2000, 8000], 43, "full", [], "model.cutoffs [2000, 8000] do not fit the vocabulary of 43: the full softmax is used (model.output: full)"),
])
def test_the_output_layer_is_fitted_to_a_small_vocabulary(cutoffs, vocab_size, output, kept, note):
    spec = {**project_params()["model"], "cutoffs": cutoffs}
    fitted, said = output_layer(spec, vocab_size)
    assert (fitted["output"], fitted["cutoffs"], said) == (output, kept, note)
    config = config_from_params(spec, vocab_size)
    assert (config.output, list(config.cutoffs)) == (output, kept)
    model = build(config)
    features, _, _ = model(torch.zeros(1, 3, dtype=torch.long), model.init_state(1))
    assert model.output.log_probs(features).shape == (1, 3, vocab_size)
