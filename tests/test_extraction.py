"""Extraction oracles: hidden states, residual identity, batching invariance, pooling, bad input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import probekit
from probekit.core.activations import COMPONENTS
from probekit.extraction.forward import ExtractionError, capture, encode
from probekit.models.testing import FAMILIES, tiny_model

STIMULI = pd.DataFrame({
    "text": ["An apple", "A church and organ", "A cat is to a kitten as a dog is to a puppy",
             "The weather was mild and the meeting ran late into the afternoon, said the apple grower",
             "An organ"],
    "target": ["apple", ["church", "organ"], ["cat", "kitten", "dog", "puppy"], "apple", "organ"],
    "label": [1, 0, 1, 0, 1],
})


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request):
    return tiny_model(request.param)


def _reference_hidden(m, text):
    ids = torch.tensor([m.tokenizer(text)["input_ids"]])
    with torch.inference_mode():
        out = m.model(input_ids=ids, output_hidden_states=True, use_cache=False)
    return out.hidden_states


def test_resid_pre_equals_output_hidden_states(tiny):
    acts = probekit.extract(tiny, STIMULI, batch_size=2)
    enc = encode(tiny.tokenizer, STIMULI, "target_mean")
    for i, text in enumerate(STIMULI.text):
        hs = _reference_hidden(tiny, text)
        w = torch.from_numpy(enc.weights[i])
        for l in range(tiny.n_layers):       # hidden_states[l] is the input of block l for l < n_layers
            ref = (w[:, None] * hs[l][0]).sum(0).numpy()
            np.testing.assert_allclose(acts.get(l, "resid_pre")[i], ref, rtol=1e-4, atol=1e-5)


def test_residual_identity(tiny):
    """resid_pre[l+1] == resid_pre[l] + attn_out[l] + mlp_out[l]; the last block against its output."""
    enc = encode(tiny.tokenizer, STIMULI, "target_mean")
    with capture(tiny) as run:
        out = run(enc.input_ids, enc.weights)
    L = tiny.n_layers
    for l in range(L):
        nxt = out[(l + 1, "resid_pre")] if l + 1 < L else out[(L - 1, "resid_post")]
        summed = out[(l, "resid_pre")] + out[(l, "attn_out")] + out[(l, "mlp_out")]
        torch.testing.assert_close(nxt, summed, rtol=1e-4, atol=1e-5)
        # and the sublayers are not trivially zero (a hook on the wrong module would often be)
        assert out[(l, "attn_out")].abs().max() > 0 and out[(l, "mlp_out")].abs().max() > 0


def test_last_block_output_is_before_final_norm(tiny):
    """hidden_states[-1] is after the final norm; our resid_post is before it."""
    from probekit.models.adapters import final_norm
    text = STIMULI.text[1]
    df = STIMULI.iloc[[1]]
    enc = encode(tiny.tokenizer, df, "last_token")
    with capture(tiny) as run:
        out = run(enc.input_ids, enc.weights)
    hs = _reference_hidden(tiny, text)
    with torch.inference_mode():
        normed = final_norm(tiny.model)(out[(tiny.n_layers - 1, "resid_post")])
    torch.testing.assert_close(normed[0], hs[-1][0, -1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pooling", ["target_mean", "last_token"])
def test_batch_size_and_padding_invariance(tiny, pooling):
    one = probekit.extract(tiny, STIMULI, pooling=pooling, batch_size=1)
    mixed = probekit.extract(tiny, STIMULI, pooling=pooling, batch_size=5)
    for l in range(tiny.n_layers):
        for c in COMPONENTS:
            np.testing.assert_allclose(one.get(l, c), mixed.get(l, c), rtol=1e-4, atol=1e-5)


def test_last_token_pooling_reads_the_last_real_token():
    m = tiny_model("llama")
    acts = probekit.extract(m, STIMULI, pooling="last_token", batch_size=5)
    for i, text in enumerate(STIMULI.text):
        hs = _reference_hidden(m, text)
        np.testing.assert_allclose(acts.get(2, "resid_pre")[i], hs[2][0, -1].numpy(), rtol=1e-4, atol=1e-5)


def test_multi_token_word_is_averaged():
    m = tiny_model("llama")
    df = pd.DataFrame({"text": ["A xylophone"], "target": ["xylophone"]})
    enc = encode(m.tokenizer, df, "target_mean")
    w = enc.weights[0]
    n = int(enc.n_target_tokens[0])
    assert n > 1, "the tiny vocabulary should split 'xylophone'"
    np.testing.assert_allclose(w[w > 0], 1.0 / n)
    assert w[:2].sum() == 0          # <bos> and "A" are not pooled


def test_several_targets_weigh_each_word_equally():
    m = tiny_model("llama")
    df = pd.DataFrame({"text": ["A cat and xylophone"], "target": [["cat", "xylophone"]]})
    enc = encode(m.tokenizer, df, "target_mean")
    w = enc.weights[0]
    assert abs(w.sum() - 1) < 1e-6
    ids = m.tokenizer("A cat and xylophone", return_offsets_mapping=True)
    cat_tokens = [j for j, (a, b) in enumerate(ids["offset_mapping"]) if a < 5 and b > 2 and b > a]
    assert abs(w[cat_tokens].sum() - 0.5) < 1e-6


def test_stored_bytes_match_the_target():
    m = tiny_model("llama")
    acts = probekit.extract(m, STIMULI)
    total = sum(acts.get(l, c).nbytes for l in acts.layers for c in acts.components)
    assert total == len(STIMULI) * m.n_layers * 3 * m.d_model * 4
    assert list(acts.stimuli["n_target_tokens"]) == list(encode(m.tokenizer, STIMULI, "target_mean").n_target_tokens)
    assert (acts.stimuli["label"] == STIMULI["label"]).all()        # labels are carried through


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("text,target,match", [
    ("An apple", "pear", r"stimulus 0: target word 'pear' does not occur"),
    ("", "apple", r"stimulus 0: empty text"),
    ("   ", "apple", r"stimulus 0: empty text"),
    ("A pineapple", "apple", r"'apple' does not occur as a whole word"),
    ("An apple", [], r"has no target word"),
])
def test_bad_stimuli_get_specific_errors(text, target, match):
    m = tiny_model("llama")
    with pytest.raises(ExtractionError, match=match):
        probekit.extract(m, pd.DataFrame({"text": [text], "target": [target]}))


def test_target_that_maps_to_no_token():
    m = tiny_model("llama")

    class NoOffsets:
        """A tokenizer wrapper whose offsets cover nothing (as after truncation)."""
        def __init__(self, tok):
            self._tok = tok
        def __getattr__(self, name):
            return getattr(self._tok, name)
        def __call__(self, texts, **kw):
            enc = self._tok(texts, **kw)
            enc["offset_mapping"] = [[(0, 0)] * len(o) for o in enc["offset_mapping"]]
            return enc

    with pytest.raises(ExtractionError, match=r"target word 'apple' maps to no token of model tiny-llama"):
        encode(NoOffsets(m.tokenizer), pd.DataFrame({"text": ["An apple"], "target": ["apple"]}),
               "target_mean", m.name)


def test_unknown_pooling_and_missing_columns():
    m = tiny_model("llama")
    with pytest.raises(ExtractionError, match="unknown pooling"):
        probekit.extract(m, STIMULI, pooling="max")
    with pytest.raises(ExtractionError, match="needs a 'target' column"):
        probekit.extract(m, STIMULI[["text"]], pooling="target_mean")
    # last-token pooling needs no target
    acts = probekit.extract(m, STIMULI[["text"]], pooling="last_token")
    assert acts.get(0, "resid_pre").shape == (len(STIMULI), m.d_model)


def test_non_finite_activations_name_the_layer():
    m = tiny_model("llama")
    with torch.no_grad():
        m.model.model.layers[1].mlp.down_proj.weight.fill_(float("inf"))
    with pytest.raises(ExtractionError, match=r"non-finite activations \(NaN/inf\) at layer 1 mlp_out"):
        probekit.extract(m, STIMULI)


def test_unsupported_architecture_names_what_is_missing():
    from probekit.models.loading import UnsupportedArchitectureError
    with pytest.raises(UnsupportedArchitectureError, match=r"model_type 'gpt_neox'.*Supported model types"):
        tiny_model("gpt_neox")


def test_unknown_alias_says_how_to_supply():
    from probekit.models.loading import ModelUnavailableError, load_model
    with pytest.raises(ModelUnavailableError, match=r"unknown model 'smollm3-9b'"):
        load_model("smollm3-9b")


def test_paper_model_without_weights_says_how_to_supply(monkeypatch, tmp_path):
    from probekit.models.loading import ModelUnavailableError, load_model
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("PROBEKIT_LLAMA_3_2_3B", raising=False)
    with pytest.raises(ModelUnavailableError) as exc:
        load_model("llama-3.2-3b")
    msg = str(exc.value)
    assert "meta-llama/Llama-3.2-3B" in msg and "PROBEKIT_LLAMA_3_2_3B" in msg and "huggingface-cli login" in msg
    monkeypatch.setenv("PROBEKIT_LLAMA_3_2_3B", str(tmp_path / "nowhere"))
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        load_model("llama-3.2-3b")


# ----------------------------------------------------------------------------- the real model

def test_real_smollm2_oracles(smollm2):
    """On SmolLM2-135M itself: hidden states, the residual identity and the final block, 30 layers."""
    assert smollm2.n_layers == 30 and smollm2.d_model == 576
    assert type(smollm2.model).__name__ == "LlamaForCausalLM"
    df = STIMULI
    enc = encode(smollm2.tokenizer, df, "target_mean")
    with capture(smollm2) as run:
        out = run(enc.input_ids, enc.weights)
    L = smollm2.n_layers
    for l in range(L):
        nxt = out[(l + 1, "resid_pre")] if l + 1 < L else out[(L - 1, "resid_post")]
        summed = out[(l, "resid_pre")] + out[(l, "attn_out")] + out[(l, "mlp_out")]
        scale = nxt.abs().max()
        assert (nxt - summed).abs().max() <= 1e-5 * scale + 1e-5
    hs = _reference_hidden(smollm2, df.text[2])
    w = torch.from_numpy(enc.weights[2])
    for l in (0, 7, 29):
        ref = (w[:, None] * hs[l][0]).sum(0)
        torch.testing.assert_close(out[(l, "resid_pre")][2], ref, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- other load paths

def test_bfloat16_model_pools_to_float32_close_to_fp32():
    m32 = tiny_model("llama")
    m16 = tiny_model("llama")
    m16.model.to(torch.bfloat16)
    a = probekit.extract(m32, STIMULI)
    b = probekit.extract(m16, STIMULI)
    for l in range(m32.n_layers):
        for c in COMPONENTS:
            x, y = a.get(l, c), b.get(l, c)
            assert y.dtype == np.float32
            assert np.abs(x - y).max() <= 0.05 * np.abs(x).max() + 1e-3


def test_local_checkpoint_directory_with_device_map_auto(tmp_path):
    """The path a user's Llama takes: a saved checkpoint directory, loaded through accelerate."""
    from probekit.models.loading import load_model
    src = tiny_model("llama")
    src.model.save_pretrained(tmp_path)
    src.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="auto")
    assert loaded.name == tmp_path.name and loaded.fingerprint.startswith("dir:")
    a = probekit.extract(src, STIMULI)
    b = probekit.extract(loaded, STIMULI)
    for c in COMPONENTS:
        np.testing.assert_allclose(a.get(2, c), b.get(2, c), rtol=1e-5, atol=1e-6)
    # the fingerprint follows the weights: another checkpoint in the same place is another model
    tiny_model("llama", seed=5).model.save_pretrained(tmp_path)
    assert load_model(str(tmp_path)).fingerprint != loaded.fingerprint
