"""Llama 3 offline: the real tokenizer and Llama-3-shaped checkpoints with seeded random weights.

No model hub is needed:

* :func:`tokenizer` builds the real Llama 3 fast tokenizer from the PyPI package
  ``llama-models`` (``llama_models/llama3/tokenizer.model``, a tiktoken BPE file;
  the split pattern and the 256 special tokens are those of
  ``llama_models/llama3/tokenizer.py``) with transformers' ``TikTokenConverter``.
  ``<|begin_of_text|>`` (id 128000) is prepended, offsets are byte-level with the
  leading space kept (as in Meta's own ``tokenizer.json``), so target-word pooling
  works through :func:`probekit.extraction.forward.encode`. Ids equal tiktoken's
  (``tests/test_llama3.py`` checks).
* :func:`build_checkpoint` writes a transformers checkpoint directory (config,
  sharded safetensors with an index, tokenizer files) of one of :data:`SHAPES`:
  the exact Llama-3.2-3B shape, a slice of Llama-3.3-70B at full width, or a
  tiny model for tests. Weights are random, drawn by ``from_config`` under
  ``torch.manual_seed(seed)``; the directory is written into a temporary sibling
  and renamed, so an interrupted build is never used.
  :func:`ensure_checkpoint` builds into the probekit cache on first use.

Command line: ``python -m probekit build-llama3 --shape llama-3.2-3b [--out DIR]``.
"""
from __future__ import annotations

import gc
import json
import os
from pathlib import Path

from probekit.core.atomic import atomic_directory
from probekit.core.checks import count_type, usable_dir
from probekit.core.hashing import file_sha256
from probekit.models.loaded import torch_dtype
from probekit.models.placement import n_params
from probekit.models.registry import cache_dir

BOS_ID = 128000
VOCAB_SIZE = 128256
N_RESERVED_SPECIAL = 256
#: Meta's split pattern (llama_models/llama3/tokenizer.py ``Tokenizer.pat_str``).
PAT_STR = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_NAMED_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                  "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
                  "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
                  "<|python_tag|>", "<|image|>"]


class Llama3Unavailable(RuntimeError):
    """The ``llama-models`` package (the tokenizer file) or ``tiktoken`` is not installed."""


def special_tokens() -> list[str]:
    """The 256 special tokens in id order (128000 ...), as llama_models/llama3/tokenizer.py defines them."""
    reserved = [f"<|reserved_special_token_{2 + i}|>" for i in range(N_RESERVED_SPECIAL - len(_NAMED_SPECIAL))]
    return _NAMED_SPECIAL + reserved


def tokenizer_model_path() -> Path:
    """``tokenizer.model`` shipped by the PyPI package ``llama-models`` (found without importing it)."""
    import importlib.metadata as md
    try:
        dist = md.distribution("llama-models")
    except md.PackageNotFoundError:
        raise Llama3Unavailable("the Llama 3 tokenizer comes from the PyPI package llama-models, which is not "
                                "installed: `pip install --no-deps llama-models==0.3.0 tiktoken` "
                                "(or `pip install -e '.[llama3]'`)") from None
    for f in dist.files or ():
        if str(f).replace("\\", "/").endswith("llama_models/llama3/tokenizer.model"):
            return Path(dist.locate_file(f))
    raise Llama3Unavailable(f"llama-models {dist.version} ships no llama_models/llama3/tokenizer.model")


def tiktoken_encoding():
    """The reference: Meta's tokenizer as a ``tiktoken.Encoding`` (what llama_models itself builds)."""
    try:
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe
    except ImportError:
        raise Llama3Unavailable("tiktoken is not installed: `pip install tiktoken`") from None
    ranks = load_tiktoken_bpe(str(tokenizer_model_path()))
    specials = {t: len(ranks) + i for i, t in enumerate(special_tokens())}
    return tiktoken.Encoding(name="llama3", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=specials)


def tokenizer():
    """The Llama 3 fast tokenizer (``PreTrainedTokenizerFast``), converted once and cached.

    The conversion (about 10-20 s) is cached as ``tokenizer.json`` under
    ``<cache>/llama3/tokenizer-<sha of tokenizer.model>/``.
    """
    from transformers import PreTrainedTokenizerFast
    src = tokenizer_model_path()
    target = cache_dir() / "llama3" / f"tokenizer-{file_sha256(src)[:16]}"
    if not (target / "tokenizer.json").exists():
        with atomic_directory(target) as tmp:
            _convert(src).save(str(tmp / "tokenizer.json"))
    return _wrap(PreTrainedTokenizerFast(tokenizer_file=str(target / "tokenizer.json")))


def _convert(src: Path):
    from tokenizers import processors
    from transformers.convert_slow_tokenizer import TikTokenConverter
    tok = TikTokenConverter(vocab_file=str(src), pattern=PAT_STR, extra_special_tokens=special_tokens()).converted()
    if tok.get_vocab_size() != VOCAB_SIZE:
        raise Llama3Unavailable(f"{src}: converted vocabulary has {tok.get_vocab_size()} tokens, expected {VOCAB_SIZE}")
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                      special_tokens=[(bos, BOS_ID)]),
    ])
    return tok


def _wrap(fast):
    fast.bos_token = "<|begin_of_text|>"
    fast.eos_token = "<|end_of_text|>"
    fast.pad_token = "<|finetune_right_pad_id|>"
    fast.model_max_length = 131072
    return fast


# ----------------------------------------------------------------------------- shapes

#: name -> LlamaConfig keyword arguments. ``llama-3.2-3b`` is the exact published shape;
#: ``llama-3.3-70b-slice`` is Llama-3.3-70B's width with ``num_hidden_layers`` layers (default 2).
SHAPES: dict[str, dict] = {
    "llama-3.2-3b": dict(
        hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=131072, rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192)),
    "llama-3.3-70b-slice": dict(
        hidden_size=8192, intermediate_size=28672, num_hidden_layers=2, num_attention_heads=64,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=131072, rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192)),
    "tiny": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=131072, rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192)),
}


def llama_config(shape: str, n_layers: int | None = None):
    """A ``LlamaConfig`` of one of :data:`SHAPES` (vocabulary 128256, rope theta 500000, llama3 rope scaling)."""
    from transformers import LlamaConfig
    if shape not in SHAPES:
        raise ValueError(f"unknown Llama 3 shape {shape!r}; known: {', '.join(SHAPES)}")
    kw = dict(SHAPES[shape])
    if n_layers is not None:
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        kw["num_hidden_layers"] = int(n_layers)
    rope = kw.pop("rope_scaling")
    cfg = LlamaConfig(vocab_size=VOCAB_SIZE, bos_token_id=BOS_ID, eos_token_id=128001,
                      hidden_act="silu", attention_bias=False, mlp_bias=False, **kw)
    # transformers 5 keeps rope settings in rope_parameters; 4.x in rope_theta + rope_scaling
    if hasattr(cfg, "rope_parameters"):
        cfg.rope_parameters = dict(rope, rope_theta=500000.0)
    else:
        cfg.rope_theta = 500000.0
        cfg.rope_scaling = rope
    cfg.architectures = ["LlamaForCausalLM"]
    return cfg


def build_checkpoint(shape: str, out_dir: str | os.PathLike, *, seed: int = 0, dtype: str = "bfloat16",
                     n_layers: int | None = None, max_shard_bytes: int = 2 << 30, log=None) -> Path:
    """Write a Llama-3-shaped checkpoint with seeded random weights to ``out_dir`` (atomically).

    The model is made by ``LlamaForCausalLM._from_config`` (transformers' own
    initialisation: normal(0, 0.02) linears and embeddings, unit norms) under
    ``torch.manual_seed(seed)``, directly in ``dtype``. Peak memory is the model
    once in ``dtype`` plus one shard: each shard is written with ``safe_open``-
    compatible safetensors and its tensors are released right after, so the 3B
    in bf16 (6.4 GB) needs about 7 GB and the 70B slice (2 layers) about 9 GB.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM
    cfg = llama_config(shape, n_layers)
    tdtype = torch_dtype(dtype)
    if tdtype is None:
        raise ValueError("build_checkpoint needs an explicit dtype (float32, bfloat16 or float16)")
    out = Path(out_dir)
    say = log or (lambda m: None)
    tok = tokenizer()
    with atomic_directory(out) as tmp:
        say(f"initialising {shape} ({n_params(cfg) / 1e9:.2f} B parameters, {dtype}, seed {seed})")
        torch.manual_seed(seed)
        model = LlamaForCausalLM._from_config(cfg, dtype=tdtype)
        model.eval()
        cfg_out = model.config
        cfg_out.dtype = str(tdtype).replace("torch.", "")
        cfg_out.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        state = {k: v for k, v in model.state_dict().items()
                 if not (cfg.tie_word_embeddings and k == "lm_head.weight")}
        del model
        # group by block so a block's tensors live in one shard (what streaming reads)
        groups: dict[str, list[str]] = {}          # "layers.N" or the tensor's own name -> tensor names
        for k in state:
            groups.setdefault("layers." + k.split(".layers.")[1].split(".")[0] if ".layers." in k else k, []).append(k)
        shards: list[list[str]] = [[]]
        size = 0
        for g in groups.values():
            gb = sum(state[k].numel() * state[k].element_size() for k in g)
            if shards[-1] and size + gb > max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].extend(g)
            size += gb
        weight_map, total = {}, 0
        for i, keys in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            tensors = {k: state.pop(k).contiguous() for k in keys}
            total += sum(t.numel() * t.element_size() for t in tensors.values())
            save_file(tensors, str(tmp / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in keys})
            del tensors
            gc.collect()
            say(f"wrote {name}")
        (tmp / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
        (tmp / "probekit-llama3.json").write_text(json.dumps(
            {"shape": shape, "seed": seed, "dtype": cfg_out.dtype, "n_layers": cfg.num_hidden_layers,
             "weights": "random (transformers from_config init under torch.manual_seed)"}, indent=1))
    return out


def ensure_checkpoint(shape: str, *, seed: int = 0, dtype: str = "bfloat16", n_layers: int | None = None,
                      log=None) -> Path:
    """The checkpoint of ``shape`` in the probekit cache, built on first use."""
    nl = "" if n_layers is None else f"-L{n_layers}"
    target = cache_dir() / "llama3" / f"{shape}{nl}-seed{seed}-{dtype}"
    if not (target / "probekit-llama3.json").exists():
        build_checkpoint(shape, target, seed=seed, dtype=dtype, n_layers=n_layers, log=log)
    return target


def add_build_args(p) -> None:
    """The options of ``probekit build-llama3`` (shared by :func:`main` and :mod:`probekit.cli`)."""
    p.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.2-3b", help="the shape to build")
    p.add_argument("--out", default=None, help="directory to write (default: the probekit cache)")
    p.add_argument("--seed", type=count_type("--seed", 0), default=0, help="torch seed of the weights (>= 0)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"], help="weight dtype")
    p.add_argument("--layers", type=count_type("--layers", 1), default=None,
                   help="number of blocks, >= 1 (default: the shape's)")


def run_build(a) -> int:
    say = lambda m: print(m, flush=True)     # noqa: E731
    if a.out:
        usable_dir(a.out, "--out")           # before the tokenizer build (~40 s): PathError, exit 2
        path = build_checkpoint(a.shape, a.out, seed=a.seed, dtype=a.dtype, n_layers=a.layers, log=say)
    else:
        path = ensure_checkpoint(a.shape, seed=a.seed, dtype=a.dtype, n_layers=a.layers, log=say)
    print(path)
    return 0


def main(argv=None) -> int:
    """``python -m probekit build-llama3 --shape SHAPE [--out DIR] [--seed N] [--dtype bfloat16] [--layers N]``."""
    import argparse
    p = argparse.ArgumentParser(prog="probekit build-llama3",
                                description="write a Llama-3-shaped checkpoint (real tokenizer, random weights)")
    add_build_args(p)
    return run_build(p.parse_args(argv))
