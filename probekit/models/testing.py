"""Test fixtures that need no download: tiny random models and synthetic activations.

Tiny random-initialised models, one per family of the adapter table, use a byte-level BPE
tokenizer trained on the fly (offsets included), so they exercise the same code paths as real
checkpoints; their activations are random, for checking plumbing (hooks, pooling, residual
identities, the store), never for claims. :func:`make_synthetic_acts` builds an
:class:`~probekit.core.activations.ActivationSet` with planted, group-level labels for the probe tests
and benchmarks.
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from probekit.core.activations import COMPONENTS, ActivationSet
from probekit.models.adapters import ADAPTERS, adapter_for
from probekit.models.loaded import LoadedModel

#: one tiny model per family of the adapter table
FAMILIES = tuple(ADAPTERS)


@functools.lru_cache(maxsize=None)
def mixed_stimuli(n: int) -> pd.DataFrame:
    """``n`` texts alternating a one-word target ("An apple 0") and a two-word target ("A cat and organ
    number 1 in the church"), for extraction and store tests."""
    return pd.DataFrame({
        "text": [f"A cat and organ number {i} in the church" if i % 2 else f"An apple {i}" for i in range(n)],
        "target": [["cat", "organ"] if i % 2 else "apple" for i in range(n)],
    })


def tiny_tokenizer(bos: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "<bos>", "<eos>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["An apple and a church and organ", "A cat is to a kitten as a dog is to a puppy",
              "The weather was mild and the meeting ran late into the afternoon"] * 20
    tok.train_from_iterator(corpus, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")


def tiny_config(family: str, n_layers: int = 3, d_model: int = 32, vocab_size: int = 320):
    import transformers as tf

    common = dict(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=2 * d_model,
                  num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family == "llama":
        return tf.LlamaConfig(**common)
    if family == "mistral":
        return tf.MistralConfig(**common, sliding_window=None)
    if family == "qwen2":
        return tf.Qwen2Config(**common)
    if family == "qwen3":
        return tf.Qwen3Config(**common, head_dim=8)
    if family == "gemma2":
        return tf.Gemma2Config(**common, head_dim=8)
    if family == "gemma3_text":
        return tf.Gemma3TextConfig(**common, head_dim=8, sliding_window=4)
    if family == "gpt2":
        return tf.GPT2Config(vocab_size=vocab_size, n_embd=d_model, n_layer=n_layers, n_head=4,
                             n_positions=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family == "gpt_neox":       # deliberately absent from the adapter table
        return tf.GPTNeoXConfig(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=2 * d_model,
                                num_hidden_layers=n_layers, num_attention_heads=4, max_position_embeddings=256)
    raise KeyError(family)


def tiny_model(family: str, n_layers: int = 3, d_model: int = 32, seed: int = 0, check_adapter: bool = True):
    """A :class:`probekit.models.loading.LoadedModel` with random weights of the given family."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_config(family, n_layers, d_model)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    # random init leaves some norms at exactly 1 / 0: perturb them so a swapped hook would show
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    if check_adapter:
        adapter_for(model)
    tok = tiny_tokenizer(bos=family != "gpt2")
    tok.padding_side = "right"
    return LoadedModel(model=model, tokenizer=tok, name=f"tiny-{family}", fingerprint=f"tiny-{family}-{seed}",
                       source="random", dtype="float32")


def make_synthetic_acts(n_groups: int = 40, per_group: int = 6, d: int = 64, n_layers: int = 6,
                        n_binary: int = 2, n_continuous: int = 1, signal=None, word_noise: float = 1.0,
                        seed: int = 0):
    """A small :class:`ActivationSet` with planted, group-level labels (tests, benchmarks).

    ``n_groups`` target words each appear in ``per_group`` stimuli (group =
    word). Every label is a property of the word; layer ``l`` carries it along
    a random direction with strength ``signal[l]`` (default: a bump peaking at
    layer ``n_layers // 3``), on top of a per-word random vector
    (``word_noise``) and per-stimulus noise. Columns: text, target, group,
    ``bin{i}``, ``cont{i}``, n_letters, zipf, n_target_tokens.
    """
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    g = np.repeat(np.arange(n_groups), per_group)
    if signal is None:
        signal = 1.5 * np.exp(-0.5 * ((np.arange(n_layers) - n_layers // 3) / max(1, n_layers / 6)) ** 2)
    signal = np.asarray(signal, dtype=float)
    lab = {}
    for i in range(n_binary):
        yw = rng.permutation(np.arange(n_groups) % 2)
        lab[f"bin{i}"] = yw[g]
    for i in range(n_continuous):
        lab[f"cont{i}"] = rng.standard_normal(n_groups)[g]
    names = list(lab)
    dirs = rng.standard_normal((len(names), d)) / np.sqrt(d) * 4
    words = rng.standard_normal((n_groups, d)) * word_noise
    arrays = {}
    for l in range(n_layers):
        for c in COMPONENTS:
            X = rng.standard_normal((n, d)) + words[g]
            for j, nm in enumerate(names):
                y = lab[nm].astype(float)
                yc = (2 * y - 1) if nm.startswith("bin") else y
                X += signal[l] * yc[:, None] * dirs[j][None, :]
            arrays[(l, c)] = X.astype(np.float32)
    stim = pd.DataFrame({"text": [f"A w{w} in frame {k}" for w, k in zip(g, np.tile(np.arange(per_group), n_groups))],
                         "target": [f"w{w}" for w in g], "group": g, **lab,
                         "n_letters": (2 + g % 7).astype(float), "zipf": rng.normal(4, 1, n_groups)[g],
                         "n_target_tokens": 1 + g % 2})
    stim.attrs["labels"] = {nm: {"kind": "binary" if nm.startswith("bin") else "continuous",
                                 "role": "semantic", "group": "group"} for nm in names}
    stim.attrs["name"] = "synthetic"
    return ActivationSet.from_arrays(arrays, stim, model_name="synthetic")
