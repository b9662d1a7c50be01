"""Interventions (probekit.extraction.interventions): oracles on a tiny model of every adapter family, in
memory and layer-streamed, fp32.

* the empty intervention is the ordinary extraction, bit for bit; patching a stimulus with itself too;
* zero-ablating attn_out (mlp_out) through the hooks equals the ordinary extraction of a copy whose weights
  silence that sublayer (o_proj / c_proj / down_proj zeroed; Gemma's post-norm scaled by 1 + w = 0);
* mean / resample ablation replace the sublayer's pooled output by the hand-computed set mean / donor mean;
* a swap equals a hand-run of the blocks in swapped order (each with the arguments it receives normally);
* streamed == in memory under each intervention; the store keys the intervention, the ordinary key is unchanged;
* bad input is refused in one line before any forward pass.
"""
from __future__ import annotations

import copy
import types

import numpy as np
import pandas as pd
import pytest
import torch

import probekit
from probekit.core.activations import COMPONENTS
from probekit.extraction import ActivationStore, encode, store_identity
from probekit.extraction.forward import capture
from probekit.extraction.interventions import (Intervention, InterventionError, MeanAblation, PatchResidual,
                                               ResampleAblation, SwapBlocks, ZeroAblation, as_intervention)
from probekit.models import load_model
from probekit.models.adapters import adapter_for, base_model, blocks
from probekit.models.loaded import LoadedModel
from probekit.models.testing import FAMILIES, tiny_config, tiny_model, tiny_tokenizer

STIM = pd.DataFrame({
    "text": ["An apple and a church", "A cat is to a kitten as a dog is to a puppy",
             "The weather was mild and the meeting ran late into the afternoon", "An organ",
             "A dog and an apple", "The church organ was late"],
    "target": ["apple", "kitten", "meeting", "organ", "dog", "organ"],
})
N = len(STIM)


def _all(acts, L):
    return {(l, c): acts.get(l, c) for l in range(L) for c in COMPONENTS}


def _same(a, b, L, exact=True, tol=1e-5):
    for key in _all(a, L):
        x, y = a.get(*key), b.get(*key)
        if exact:
            assert np.array_equal(x, y), f"{key}: max diff {np.abs(x - y).max()}"
        else:
            np.testing.assert_allclose(x, y, rtol=tol, atol=tol, err_msg=str(key))


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request, tmp_path_factory):
    """(family, in-memory model, layer-streamed model) of one checkpoint (3 layers, d_model 32)."""
    family = request.param
    path = tmp_path_factory.mktemp(f"iv-{family}")
    m = tiny_model(family, n_layers=3, d_model=32, seed=1)
    m.model.save_pretrained(path)
    m.tokenizer.save_pretrained(path)
    mem = load_model(str(path), dtype="float32", device="cpu", stream_layers=False)
    streamed = load_model(str(path), dtype="float32", device="cpu", stream_layers=True)
    return family, mem, streamed


@pytest.fixture(scope="module")
def ordinary(pair):
    family, mem, streamed = pair
    return {p: probekit.extract(mem, STIM, p, batch_size=4) for p in ("target_mean", "last_token")}


# ----------------------------------------------------------------------------- identities

@pytest.mark.parametrize("empty", [None, (), Intervention.none(), Intervention(())])
def test_empty_intervention_is_bit_identical(pair, ordinary, empty):
    family, mem, streamed = pair
    assert as_intervention(empty) is None
    for model in (mem, streamed):
        b = probekit.extract(model, STIM, "target_mean", batch_size=4, intervention=empty)
        ref = ordinary["target_mean"] if model is mem else probekit.extract(streamed, STIM, "target_mean", batch_size=4)
        _same(ref, b, mem.n_layers)
        assert "intervention" not in b.meta


@pytest.mark.parametrize("position", [-1, 1])
def test_patching_every_stimulus_with_itself_is_identical(pair, ordinary, position):
    family, mem, streamed = pair
    iv = PatchResidual(1, position, tuple(range(N)))
    for model in (mem, streamed):
        ref = ordinary["last_token"] if model is mem else probekit.extract(streamed, STIM, "last_token", batch_size=4)
        b = probekit.extract(model, STIM, "last_token", batch_size=4, intervention=iv)
        _same(ref, b, mem.n_layers)
        assert b.meta["intervention"] == iv.key()


def test_patch_from_a_donor_puts_the_donors_stream_there(pair, ordinary):
    family, mem, _ = pair
    ref = ordinary["last_token"]
    b = probekit.extract(mem, STIM, "last_token", batch_size=4, intervention=PatchResidual(1, -1, 2))
    # the donor's stream comes from a first pass over the donor rows alone (another batch shape than ref's):
    # equal to float32 rounding, not bit for bit (BLAS kernels may block a GEMM by its shape; on an AMD EPYC
    # box the difference was 2e-9)
    np.testing.assert_allclose(b.get(1, "resid_pre"), np.repeat(ref.get(1, "resid_pre")[[2]], N, 0),
                               rtol=1e-6, atol=1e-7)
    for c in COMPONENTS:                           # earlier layers untouched
        np.testing.assert_array_equal(b.get(0, c), ref.get(0, c))
    assert not np.allclose(b.get(2, "resid_pre")[0], ref.get(2, "resid_pre")[0])   # and it propagates


# ----------------------------------------------------------------------------- ablations

def _silenced(mem: LoadedModel, layer: int, component: str) -> LoadedModel:
    """A copy whose weights make the sublayer add exactly zero (independent of the hooks)."""
    model = copy.deepcopy(mem.model)
    blk = blocks(model)[layer]
    family = adapter_for(model).family
    with torch.no_grad():
        if family in ("gemma2", "gemma3_text"):      # Gemma RMSNorm: x * (1 + w); the post-norms are the output
            norm = blk.post_attention_layernorm if component == "attn_out" else blk.post_feedforward_layernorm
            norm.weight.fill_(-1.0)
        else:
            if family == "gpt2":
                proj = blk.attn.c_proj if component == "attn_out" else blk.mlp.c_proj
            else:
                proj = blk.self_attn.o_proj if component == "attn_out" else blk.mlp.down_proj
            proj.weight.zero_()
            if getattr(proj, "bias", None) is not None:
                proj.bias.zero_()
    return LoadedModel(model=model, tokenizer=mem.tokenizer, name=f"{mem.name}-silenced",
                       fingerprint=f"{mem.origin}-silenced-{layer}-{component}", source="test", dtype="float32")


@pytest.mark.parametrize("component", ["attn_out", "mlp_out"])
def test_zero_ablation_equals_the_block_without_that_sublayer(pair, component):
    family, mem, streamed = pair
    layer = 1
    hand = probekit.extract(_silenced(mem, layer, component), STIM, batch_size=4)
    for model in (mem, streamed):
        b = probekit.extract(model, STIM, batch_size=4, intervention=ZeroAblation(component, [layer]))
        _same(hand, b, mem.n_layers, exact=False)
        assert np.array_equal(b.get(layer, component), np.zeros_like(b.get(layer, component)))
        other = "mlp_out" if component == "attn_out" else "attn_out"   # the residual identity, one term gone
        np.testing.assert_allclose(b.get(layer + 1, "resid_pre") - b.get(layer, "resid_pre"), b.get(layer, other),
                                   rtol=1e-4, atol=1e-5)


def _token_means(mem, component, layer):
    """Per stimulus: the mean of the sublayer's output over its tokens (capture, uniform weights)."""
    enc = encode(mem.tokenizer, STIM, "target_mean")
    w = [np.full(len(x), 1.0 / len(x), np.float32) for x in enc.input_ids]
    with capture(mem, with_final=False) as run:
        out = run(enc.input_ids, w)
    return out[(layer, component)].numpy(), np.array([len(x) for x in enc.input_ids], float)


@pytest.mark.parametrize("component", ["attn_out", "mlp_out"])
def test_mean_ablation_uses_the_token_mean_over_the_set(pair, component):
    family, mem, _ = pair
    per, n_tok = _token_means(mem, component, 0)
    mean = (per * n_tok[:, None]).sum(0) / n_tok.sum()
    b = probekit.extract(mem, STIM, batch_size=4, intervention=MeanAblation(component, [0]))
    np.testing.assert_allclose(b.get(0, component), np.repeat(mean[None], N, 0), rtol=1e-5, atol=1e-6)
    given = probekit.extract(mem, STIM, batch_size=4, intervention=MeanAblation(component, [0], means={0: mean}))
    _same(b, given, mem.n_layers, exact=False)
    assert MeanAblation(component, [0], means={0: mean}).key() != MeanAblation(component, [0]).key()


def test_resample_ablation_uses_a_donors_token_mean(pair):
    family, mem, streamed = pair
    step = ResampleAblation("attn_out", [0, 2], seed=5)
    donors = step.donors(N)
    assert sorted(donors) == list(range(N)) and not (donors == np.arange(N)).any()
    b = probekit.extract(mem, STIM, batch_size=4, intervention=step)
    for layer in (0, 2):
        per, _ = _token_means(mem, "attn_out", layer)
        np.testing.assert_allclose(b.get(layer, "attn_out"), per[donors], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- swaps

def _hand_run(model, ids, order):
    """The blocks run by hand in ``order``, each with the arguments the base model gives it normally;
    returns the per-token stream entering each position."""
    blist = blocks(model)
    calls, first = [None] * len(blist), []

    def recorder(l):
        def rec(h, *args, **kwargs):
            calls[l] = (args, kwargs)
            if l == 0:
                first.append(h)
            return h
        return rec
    for l, blk in enumerate(blist):
        blk.forward = recorder(l)
    try:
        with torch.inference_mode():
            base_model(model)(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    finally:
        for blk in blist:
            del blk.forward
    h, stream = first[0], []
    with torch.inference_mode():
        for src in order:
            stream.append(h)
            args, kwargs = calls[src]
            h = blist[src](h, *args, **kwargs)
            h = h[0] if isinstance(h, (tuple, list)) else h
    return stream


def _check_swap(mem, streamed, first):
    iv = SwapBlocks(first, first + 1)
    order = Intervention((iv,)).order(mem.n_layers)
    types_before = list(getattr(base_model(mem.model).config, "layer_types", None) or [])
    for model in (mem,) + ((streamed,) if streamed is not None else ()):
        b = probekit.extract(model, STIM, "last_token", batch_size=4, intervention=iv)
        for i, text in enumerate(STIM.text):
            ids = torch.tensor([mem.tokenizer(text)["input_ids"]])
            stream = _hand_run(mem.model, ids, order)
            for pos in range(mem.n_layers):
                np.testing.assert_allclose(b.get(pos, "resid_pre")[i], stream[pos][0, -1].numpy(), rtol=1e-4,
                                           atol=1e-5, err_msg=f"stimulus {i} position {pos}")
    # the model is restored: block order and layer types
    assert list(getattr(base_model(mem.model).config, "layer_types", None) or []) == types_before
    again = probekit.extract(mem, STIM, "last_token", batch_size=4)
    ref = probekit.extract(mem, STIM, "last_token", batch_size=2)
    _same(ref, again, mem.n_layers, exact=False)


@pytest.mark.parametrize("first", [0, 1])
def test_swap_equals_a_hand_run_in_swapped_order(pair, first):
    family, mem, streamed = pair
    _check_swap(mem, streamed, first)


def test_swap_keeps_each_blocks_attention_type():
    """Gemma 2 alternates sliding and full attention: a swapped block keeps its own mask (window 3 < text)."""
    from transformers import AutoModelForCausalLM
    torch.manual_seed(3)
    cfg = tiny_config("gemma2")
    cfg.sliding_window = 3
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    assert len(set(cfg.layer_types[:2])) == 2
    tok = tiny_tokenizer()
    mem = LoadedModel(model=model, tokenizer=tok, name="tiny-gemma2-w3", fingerprint="w3", source="random",
                      dtype="float32")
    _check_swap(mem, None, 0)
    # and the window matters here: swapping the blocks' masks too would give other numbers
    b = probekit.extract(mem, STIM, "last_token", batch_size=4, intervention=SwapBlocks(0, 1))
    cfg.layer_types[0], cfg.layer_types[1] = cfg.layer_types[1], cfg.layer_types[0]
    try:
        wrong = probekit.extract(mem, STIM, "last_token", batch_size=4, intervention=SwapBlocks(0, 1))
    finally:
        cfg.layer_types[0], cfg.layer_types[1] = cfg.layer_types[1], cfg.layer_types[0]
    assert not np.allclose(b.get(2, "resid_pre"), wrong.get(2, "resid_pre"), atol=1e-4)


# ----------------------------------------------------------------------------- streamed == in memory

INTERVENTIONS = [
    ZeroAblation("attn_out", [0, 2]),
    Intervention((ZeroAblation("mlp_out", [1]), ZeroAblation("attn_out", [1]))),
    MeanAblation("mlp_out", [1]),
    ResampleAblation("attn_out", [1], seed=2),
    SwapBlocks(1, 2),
    PatchResidual(2, -1, 3),
    Intervention((SwapBlocks(0, 1), PatchResidual(2, 1, tuple(reversed(range(N)))))),
]


@pytest.mark.parametrize("iv", INTERVENTIONS, ids=lambda iv: (iv.key() if hasattr(iv, "key") else str(iv)))
def test_streamed_equals_in_memory_under_intervention(pair, iv):
    family, mem, streamed = pair
    a = probekit.extract(mem, STIM, "last_token", batch_size=4, intervention=iv)
    b = probekit.extract(streamed, STIM, "last_token", batch_size=4, intervention=iv)
    _same(a, b, mem.n_layers, exact=False)
    assert a.meta["intervention"] == b.meta["intervention"] == as_intervention(iv).key()


def test_an_intervened_streamed_run_stays_outside_the_planning_session(tmp_path):
    """With sets planned (replicate's one-pass session), an intervened extraction of a planned set streams on
    its own: it does not take the planned ordinary vectors, and the later ordinary extraction still gets them."""
    path = tmp_path / "ck"
    m0 = tiny_model("qwen2", n_layers=3, d_model=32, seed=1)
    m0.model.save_pretrained(path)
    m0.tokenizer.save_pretrained(path)
    mem = load_model(str(path), dtype="float32", device="cpu")
    m = load_model(str(path), dtype="float32", device="cpu", stream_layers=True)
    m.hidden_dir = str(tmp_path / "tmp")
    other = pd.DataFrame({"text": ["A kitten and a puppy", "The organ was loud"], "target": ["puppy", "organ"]})
    iv = ZeroAblation("mlp_out", [1])
    with m.planned([STIM, other], batch_size=4):
        ablated = probekit.extract(m, STIM, batch_size=4, intervention=iv)
        assert m.precomputed == {}                       # nothing planned was computed by the intervened pass
        plain = probekit.extract(m, STIM, batch_size=4)  # the planned pass: both sets
        read = m.bytes_read
        plain_other = probekit.extract(m, other, batch_size=4)
        assert m.bytes_read == read                      # served from the planned pass
    _same(probekit.extract(mem, STIM, batch_size=4, intervention=iv), ablated, 3, exact=False)
    _same(probekit.extract(mem, STIM, batch_size=4), plain, 3, exact=False)
    _same(probekit.extract(mem, other, batch_size=4), plain_other, 3, exact=False)


# ----------------------------------------------------------------------------- the store

def test_store_keys_the_intervention_and_the_ordinary_key_is_unchanged(tmp_path):
    mem = tiny_model("llama", seed=2)
    store = ActivationStore(tmp_path / "store")
    iv = ZeroAblation("mlp_out", [0])
    ordinary = probekit.extract(mem, STIM, batch_size=4, store=store)
    ablated = probekit.extract(mem, STIM, batch_size=4, store=store, intervention=iv)
    assert ordinary.meta["store"] != ablated.meta["store"]
    assert not np.allclose(ordinary.get(1, "resid_pre"), ablated.get(1, "resid_pre"))
    # an intervened run neither served nor poisoned the ordinary entry
    again = probekit.extract(mem, STIM, batch_size=4, store=store)
    assert again.meta["store"] == ordinary.meta["store"]
    _same(probekit.extract(mem, STIM, batch_size=4), again, mem.n_layers)
    served = probekit.extract(mem, STIM, batch_size=4, store=store, intervention=iv)
    assert served.meta["store"] == ablated.meta["store"]
    _same(ablated, served, mem.n_layers)
    # the ordinary identity is the one existing stores were written with: exactly these fields
    ident = store_identity(mem, STIM, "target_mean")
    assert set(ident) == {"model_fingerprint", "model_name", "stimulus_hash", "pooling", "probekit_version",
                          "n_stimuli", "n_layers", "d_model", "dtype"}
    assert store_identity(mem, STIM, "target_mean", intervention="") == ident
    assert store_identity(mem, STIM, "target_mean", intervention=iv.key()) == dict(ident, intervention=iv.key())


def test_keys_are_stable_strings():
    assert ZeroAblation("attn_out", [3, 1, 3]).key() == "zero(attn_out@1,3)"
    assert MeanAblation("mlp_out", 2).key() == "mean(mlp_out@2)"
    assert ResampleAblation("attn_out", (0,), seed=4).key() == "resample(attn_out@0;seed=4)"
    assert SwapBlocks(5, 4).key() == "swap(4,5)"
    assert PatchResidual(3, -1, 7).key() == "patch(resid_pre@3[-1];donor=7)"
    assert PatchResidual(3, 0, (1, 0)).key().startswith("patch(resid_pre@3[0];donor=rows:")
    iv = Intervention((SwapBlocks(0, 1), ZeroAblation("mlp_out", 2)))
    assert iv.key() == "swap(0,1)+zero(mlp_out@2)" and Intervention.none().key() == "" and not Intervention.none()
    assert MeanAblation("mlp_out", 0, means={0: np.ones(4)}).key() == MeanAblation("mlp_out", 0, means={0: np.ones(4)}).key()
    assert MeanAblation("mlp_out", 0, means={0: np.ones(4)}).key() != MeanAblation("mlp_out", 0, means={0: np.zeros(4)}).key()


# ----------------------------------------------------------------------------- bad input

@pytest.fixture
def no_forward(monkeypatch):
    """Any forward pass of a block fails the test: refusals must come first."""
    import torch.nn as nn

    def boom(self, *a, **k):
        raise AssertionError("a forward pass ran before the refusal")
    monkeypatch.setattr(nn.Module, "__call__", boom)


@pytest.mark.parametrize("make, match", [
    (lambda: ZeroAblation("attn_out", [3]), r"layer 3 out of range \(the model has layers 0\.\.2\)"),
    (lambda: MeanAblation("mlp_out", [-1]), r"layer -1 out of range"),
    (lambda: SwapBlocks(2, 3), r"layer 3 out of range"),
    (lambda: PatchResidual(0, -1, 6), r"donor index 6 out of range \(stimulus 0; the set has rows 0\.\.5\)"),
    (lambda: PatchResidual(0, -1, (0, 1)), r"2 donors given for 6 stimuli"),
    (lambda: PatchResidual(0, 4, 0), r"token position 4 is outside stimulus 3 \(\d tokens\)"),
    (lambda: MeanAblation("mlp_out", [0], means={0: np.zeros(5)}), r"has shape \(5,\), d_model is 32"),
    (lambda: MeanAblation("mlp_out", [0], means={0: np.zeros((2, 32))}, by_position=True),
     r"position-wise means cover 2 positions, a text has"),
])
def test_bad_input_is_refused_before_any_forward_pass(make, match, no_forward, tmp_path):
    mem = tiny_model("llama", seed=0)
    store = tmp_path / "store"
    with pytest.raises(InterventionError, match=match) as exc:
        probekit.extract(mem, STIM, batch_size=4, intervention=make(), store=store)
    assert "\n" not in str(exc.value)
    assert not any(store.rglob("manifest.json")) if store.exists() else True


@pytest.mark.parametrize("make, match", [
    (lambda: ZeroAblation("resid_pre", [0]), r"unknown component 'resid_pre'; use one of \('attn_out', 'mlp_out'\)"),
    (lambda: ZeroAblation("mlp", [0]), r"unknown component 'mlp'"),
    (lambda: SwapBlocks(0, 2), r"swap\(0,2\): only adjacent blocks can be swapped"),
    (lambda: ZeroAblation("mlp_out", []), r"no layers given"),
    (lambda: Intervention((SwapBlocks(0, 1), SwapBlocks(1, 2))), r"two swaps share a layer"),
    (lambda: Intervention(("zero",)), r"is not one of ZeroAblation"),
    (lambda: MeanAblation("mlp_out", [0, 1], means={0: np.zeros(4)}), r"means given without layer\(s\) 1"),
])
def test_malformed_steps_are_refused_on_construction(make, match):
    with pytest.raises(InterventionError, match=match) as exc:
        make()
    assert "\n" not in str(exc.value)


def test_resample_needs_two_stimuli(no_forward):
    mem = tiny_model("llama", seed=0)
    with pytest.raises(InterventionError, match=r"resampling needs at least 2 stimuli \(got 1\)"):
        probekit.extract(mem, STIM.iloc[:1], intervention=ResampleAblation("attn_out", 0))


def test_models_that_cannot_be_intervened_on_are_named(no_forward):
    from probekit.core.errors import UnsupportedArchitectureError
    from probekit.models.in_memory import HookedTransformerRunner
    own = HookedTransformerRunner(model=types.SimpleNamespace(cfg=types.SimpleNamespace(n_layers=3, d_model=32)),
                                  tokenizer=tiny_tokenizer(), name="tl-model", fingerprint="tl", source="test",
                                  dtype="float32")
    with pytest.raises(InterventionError, match=r"model tl-model: interventions hook a transformers model .* runs "
                                                r"its own hooks \(TransformerLens\)"):
        probekit.extract(own, STIM, intervention=ZeroAblation("attn_out", 0))
    neox = tiny_model("gpt_neox", check_adapter=False)
    with pytest.raises(UnsupportedArchitectureError, match=r"model_type 'gpt_neox'\) is not supported"):
        probekit.extract(neox, STIM, intervention=ZeroAblation("attn_out", 0))


# ----------------------------------------------------------------------------- the behavioural read-out

def _hand_loglik(mem, text, start=1, all_ablated=False):
    """Mean log p of the text's tokens from ``start`` on, one text, no padding; ``all_ablated``: every
    sublayer silenced, so the final norm and the head see block 0's input (the embeddings)."""
    from probekit.models.adapters import final_norm
    ids = torch.tensor([mem.tokenizer(text)["input_ids"]])
    with torch.inference_mode():
        out = mem.model(input_ids=ids, output_hidden_states=True, use_cache=False)
        logits = out.logits if not all_ablated else mem.model.get_output_embeddings()(
            final_norm(mem.model)(out.hidden_states[0]))
        if all_ablated and getattr(mem.model.config, "final_logit_softcapping", None):
            cap = mem.model.config.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap
    lp = torch.log_softmax(logits.float(), -1)[0]
    return float(np.mean([float(lp[t - 1, ids[0, t]]) for t in range(start, ids.shape[1])]))


def test_loglik_matches_a_hand_computation_and_an_empty_intervention_changes_nothing(pair):
    from probekit.extraction.readout import loglik, loglik_change
    family, mem, _ = pair
    ll = loglik(mem, STIM, batch_size=4)
    for i, text in enumerate(STIM.text):
        assert ll[i] == pytest.approx(_hand_loglik(mem, text), abs=1e-5)
    for empty in (None, (), Intervention.none()):
        assert np.array_equal(loglik_change(mem, STIM, empty, batch_size=4), np.zeros(N))
    self_patch = loglik_change(mem, STIM, PatchResidual(1, -1, tuple(range(N))), batch_size=4)
    assert np.array_equal(self_patch, np.zeros(N))


def test_loglik_with_every_sublayer_ablated_is_the_embeddings_read_out(pair):
    from probekit.extraction.readout import loglik, loglik_change
    family, mem, _ = pair
    every = list(range(mem.n_layers))
    iv = Intervention((ZeroAblation("attn_out", every), ZeroAblation("mlp_out", every)))
    ll = loglik(mem, STIM, iv, batch_size=4)
    for i, text in enumerate(STIM.text):
        assert ll[i] == pytest.approx(_hand_loglik(mem, text, all_ablated=True), abs=1e-5)
    assert np.abs(loglik_change(mem, STIM, iv, batch_size=4)).min() > 1e-4


def test_loglik_continuation_scores_the_tokens_after_the_target():
    from probekit.extraction.readout import loglik
    mem = tiny_model("llama", seed=4)
    stim = pd.DataFrame({"text": ["An apple and a church"], "target": ["apple"]})
    ids = mem.tokenizer(stim.text[0])["input_ids"]
    enc = encode(mem.tokenizer, stim, "target_mean")
    start = int(np.flatnonzero(enc.weights[0]).max()) + 1
    assert 1 < start < len(ids)
    got = loglik(mem, stim, span="continuation")[0]
    assert got == pytest.approx(_hand_loglik(mem, stim.text[0], start=start), abs=1e-5)
    assert got != pytest.approx(loglik(mem, stim)[0], abs=1e-6)


def test_loglik_last_scores_the_last_token_on_every_family(pair):
    """``span="last"`` (the head run at one position per text through ``logits_to_keep``) is the hand
    computation of the last token's log p, with and without an intervention, on every family."""
    from probekit.extraction.readout import loglik
    family, mem, _ = pair
    iv = ZeroAblation("mlp_out", [1])
    for intervention in (None, iv):
        got = loglik(mem, STIM, intervention, span="last", batch_size=4)
        ref = loglik(mem, STIM, intervention, batch_size=4)          # every token: a different mean
        for i, text in enumerate(STIM.text):
            n = len(mem.tokenizer(text)["input_ids"])
            if intervention is None:
                assert got[i] == pytest.approx(_hand_loglik(mem, text, start=n - 1), abs=1e-5)
        assert not np.allclose(got, ref)
    assert np.abs(loglik(mem, STIM, iv, span="last") - loglik(mem, STIM, span="last")).max() > 1e-6


def test_loglik_refusals_are_one_line(pair, no_forward):
    from probekit.extraction.readout import loglik
    family, mem, streamed = pair
    cases = [
        (lambda: loglik(streamed, STIM), r"is layer-streamed, which never reads the LM head"),
        (lambda: loglik(mem, STIM, span="all"), r"unknown span 'all'; use one of \('text', 'continuation', 'last'\)"),
        (lambda: loglik(mem, ["An apple"], span="continuation"), r"needs a 'target' column"),
        (lambda: loglik(mem, pd.DataFrame({"text": ["An apple"], "target": ["apple"]}), span="continuation"),
         r"stimulus 0 \('An apple'\): its target ends the text"),
        (lambda: loglik(mem, STIM, ZeroAblation("mlp_out", 9)), r"layer 9 out of range"),
    ]
    for call, match in cases:
        with pytest.raises(probekit.extraction.ExtractionError, match=match) as exc:
            call()
        assert "\n" not in str(exc.value)


def test_real_smollm2_zero_ablation_equals_the_silenced_weights(smollm2):
    """On SmolLM2-135M itself (30 layers, GQA): zero-ablating layer 0's MLP equals zeroing its down_proj, and
    the read-out of an empty intervention changes by exactly 0."""
    from probekit.extraction.readout import loglik_change
    stim = STIM.iloc[:3]
    hand = probekit.extract(_silenced(smollm2, 0, "mlp_out"), stim, batch_size=3)
    b = probekit.extract(smollm2, stim, batch_size=3, intervention=ZeroAblation("mlp_out", [0]))
    for l in range(smollm2.n_layers):
        for c in COMPONENTS:
            x, y = hand.get(l, c), b.get(l, c)
            np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(x).max())),
                                       err_msg=f"layer {l} {c}")
    assert np.array_equal(loglik_change(smollm2, stim, Intervention.none()), np.zeros(3))
