"""The offline Llama 3 tokenizer (llama-models + TikTokenConverter) and Llama-3-shaped checkpoints."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

llama3 = pytest.importorskip("probekit.models.llama3")
try:
    llama3.tiktoken_encoding()
except llama3.Llama3Unavailable as exc:     # the optional extra [llama3] (./pk installs it) is missing
    pytest.skip(f"Llama 3 tokenizer unavailable: {exc}", allow_module_level=True)

from probekit.extraction.forward import encode, extract  # noqa: E402

TEXTS = ["An apple", "A church and organ", "Paris is to France as Tokyo is to Japan",
         "The hippopotamus ate quinoa and photosynthesis continued.",
         "  leading spaces,\ttabs\n\nnewlines 12345 6789 émigré naïve Zürich 東京 🍎",
         "Antidisestablishmentarianism! It's they'll we'd I'M",
         "<|begin_of_text|> is only text here"]


@pytest.fixture(scope="module")
def tok():
    return llama3.tokenizer()


@pytest.fixture(scope="module")
def ref():
    return llama3.tiktoken_encoding()


def test_ids_equal_tiktoken_and_bos_is_prepended(tok, ref):
    assert len(tok) == llama3.VOCAB_SIZE == ref.n_vocab
    assert tok.bos_token_id == 128000 and tok.convert_ids_to_tokens(128000) == "<|begin_of_text|>"
    assert tok.convert_tokens_to_ids("<|eot_id|>") == 128009
    assert tok.convert_tokens_to_ids("<|reserved_special_token_245|>") == 128255
    for t in TEXTS:
        ids = tok(t)["input_ids"]
        assert ids[0] == 128000
        # special-token text is parsed as the special token, as in Meta's own HF tokenizer.json
        assert ids[1:] == ref.encode(t, allowed_special="all"), t
        assert tok.decode(ids[1:]) == t


def test_special_tokens_match_llama_models_source():
    """The 256 special tokens are those written in llama_models/llama3/tokenizer.py."""
    src = (llama3.tokenizer_model_path().parent / "tokenizer.py").read_text()
    assert llama3.PAT_STR in src
    for name in llama3._NAMED_SPECIAL:
        assert f'"{name}"' in src
    assert "num_reserved_special_tokens = 256" in src
    assert len(llama3.special_tokens()) == 256


def test_target_pooling_through_probekit_encode(tok):
    stim = pd.DataFrame({"text": ["An apple", "Hippopotamus and an apple", "A church and organ",
                                  "apple pie", "The hippopotamus ate"],
                         "target": ["apple", "hippopotamus", ["church", "organ"], "apple", "hippopotamus"]})
    enc = encode(tok, stim, "target_mean", "llama3")
    # "An apple": <bos> An Ġapple -> the target is the last token alone
    assert enc.input_ids[0][0] == 128000 and enc.n_target_tokens[0] == 1
    np.testing.assert_allclose(enc.weights[0], [0, 0, 1])
    # a word at the very start of the text, split into several tokens: all of them, averaged, BOS excluded
    toks = tok.convert_ids_to_tokens(enc.input_ids[1])
    k = enc.n_target_tokens[1]
    assert k >= 2 and "".join(toks[1:1 + k]) == "Hippopotamus"
    assert enc.weights[1][0] == 0 and np.allclose(enc.weights[1][1:1 + k], 1 / k)
    # two target words weigh equally
    w = enc.weights[2]
    assert w.sum() == pytest.approx(1.0) and np.count_nonzero(w) == 2
    # first word of the text without a leading space
    assert enc.n_target_tokens[3] == 1 and enc.weights[3][1] == 1
    # a multi-token word after a space: its tokens' offsets include the space, pooling still finds them
    toks = tok.convert_ids_to_tokens(enc.input_ids[4])
    k = enc.n_target_tokens[4]
    assert k >= 2 and "".join(toks[2:2 + k]).replace("Ġ", " ").strip() == "hippopotamus"


def test_shapes_are_the_published_ones():
    c = llama3.llama_config("llama-3.2-3b")
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
            c.intermediate_size, c.vocab_size, c.tie_word_embeddings) == (28, 3072, 24, 8, 128, 8192, 128256, True)
    rope = getattr(c, "rope_parameters", None) or dict(c.rope_scaling, rope_theta=c.rope_theta)
    assert rope["rope_theta"] == 500000.0 and rope["rope_type"] == "llama3" and rope["factor"] == 32.0
    assert rope["low_freq_factor"] == 1.0 and rope["high_freq_factor"] == 4.0
    assert rope["original_max_position_embeddings"] == 8192
    assert llama3.n_params(c) == pytest.approx(3.21e9, rel=0.01)
    s = llama3.llama_config("llama-3.3-70b-slice")
    assert (s.hidden_size, s.num_attention_heads, s.num_key_value_heads, s.intermediate_size, s.vocab_size,
            s.tie_word_embeddings) == (8192, 64, 8, 28672, 128256, False)
    assert llama3.n_params(llama3.llama_config("llama-3.3-70b-slice", n_layers=80)) == pytest.approx(70.55e9, rel=0.005)
    with pytest.raises(ValueError, match="unknown Llama 3 shape"):
        llama3.llama_config("llama-4")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("llama3") / "tiny"
    return llama3.build_checkpoint("tiny", out, seed=3, dtype="float32", max_shard_bytes=20 << 20)


def test_built_checkpoint_is_seeded_sharded_and_loadable(tiny_dir, tmp_path):
    from safetensors.torch import load_file

    from probekit.models.loading import load_model
    index = json.loads((tiny_dir / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2 and all((tiny_dir / s).exists() for s in shards)
    assert "lm_head.weight" not in index["weight_map"]              # tied, as in Llama-3.2
    assert not list(tiny_dir.parent.glob(".*tmp*"))                  # written atomically, nothing left over
    m = load_model(str(tiny_dir), dtype="float32", device="cpu")
    assert m.n_layers == 3 and m.d_model == 64 and m.tokenizer.bos_token_id == 128000
    w = m.model.model.layers[0].mlp.up_proj.weight
    assert 0.015 < float(w.std()) < 0.025                             # transformers' init, not zeros
    # the same seed gives the same weights; another seed other weights
    again = llama3.build_checkpoint("tiny", tmp_path / "again", seed=3, dtype="float32", max_shard_bytes=20 << 20)
    other = llama3.build_checkpoint("tiny", tmp_path / "other", seed=4, dtype="float32")
    a = {k: v for s in shards for k, v in load_file(str(tiny_dir / s)).items()}
    b = {k: v for s in sorted(set(json.loads((again / "model.safetensors.index.json").read_text())["weight_map"].values()))
         for k, v in load_file(str(again / s)).items()}
    c = {k: v for s in sorted(set(json.loads((other / "model.safetensors.index.json").read_text())["weight_map"].values()))
         for k, v in load_file(str(other / s)).items()}
    assert all((a[k] == b[k]).all() for k in a)
    assert not (a["model.layers.0.mlp.up_proj.weight"] == c["model.layers.0.mlp.up_proj.weight"]).all()


def test_streamed_equals_ordinary_on_llama3_tokenizer(tiny_dir):
    """The real tokenizer through extraction, streamed and ordinary, fp32 (<= 1e-5)."""
    from probekit.core.activations import COMPONENTS
    from probekit.models.loading import load_model
    stim = pd.DataFrame({"text": ["An apple", "Hippopotamus and an apple", "A church and organ",
                                  "Paris is to France as Tokyo is to Japan"],
                         "target": ["apple", "Hippopotamus", "organ", "Tokyo"]})
    a = extract(load_model(str(tiny_dir), "float32", "cpu"), stim, batch_size=3)
    b = extract(load_model(str(tiny_dir), "float32", "cpu", stream_layers=True), stim, batch_size=3)
    worst = max(float(np.abs(a.get(l, c) - b.get(l, c)).max()) for l in range(3) for c in COMPONENTS)
    assert worst <= 1e-5


def test_cli_builds_into_out(tmp_path):
    assert llama3.main(["--shape", "tiny", "--out", str(tmp_path / "x"), "--layers", "1", "--dtype", "bfloat16"]) == 0
    cfg = json.loads((tmp_path / "x" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 1 and cfg["dtype"] == "bfloat16"
    assert json.loads((tmp_path / "x" / "probekit-llama3.json").read_text())["seed"] == 0
