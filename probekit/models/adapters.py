"""Per-architecture adapters: where the blocks are and which modules write to the residual stream.

One small table. For an architecture whose block is

    h = h + A(h)        # attention sublayer
    h = h + M(h)        # MLP sublayer

``attn`` names the module whose output is exactly ``A(h)`` and ``mlp`` the one
whose output is ``M(h)``. For pre-norm Llama-style blocks these are the
attention and MLP modules themselves; Gemma 2/3 add a norm *after* each
sublayer, so there the post-sublayer norms are what is added to the stream.
``resid_pre`` is the input of block ``l`` (a forward pre-hook on the block).
The oracle test checks ``resid_pre[l+1] == resid_pre[l] + attn_out[l] + mlp_out[l]``
for every entry here.
"""
from __future__ import annotations

from dataclasses import dataclass

from probekit.core.errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class Adapter:
    family: str
    base: str          # path from the *ForCausalLM to the base model (runs without the LM head)
    layers: str        # path from the base model to the list of blocks
    attn: str          # path inside a block: output == what attention adds to the residual stream
    mlp: str           # path inside a block: output == what the MLP adds
    final_norm: str    # path from the base model to the final norm (applied after the last block)


_LLAMA = dict(base="model", layers="layers", attn="self_attn", mlp="mlp", final_norm="norm")
_GEMMA = dict(base="model", layers="layers", attn="post_attention_layernorm",
              mlp="post_feedforward_layernorm", final_norm="norm")

ADAPTERS: dict[str, Adapter] = {
    "llama": Adapter("llama", **_LLAMA),
    "mistral": Adapter("mistral", **_LLAMA),
    "qwen2": Adapter("qwen2", **_LLAMA),
    "qwen3": Adapter("qwen3", **_LLAMA),
    "gemma2": Adapter("gemma2", **_GEMMA),
    "gemma3_text": Adapter("gemma3_text", **_GEMMA),
    "gpt2": Adapter("gpt2", base="transformer", layers="h", attn="attn", mlp="mlp", final_norm="ln_f"),
}


def adapter_for(model) -> Adapter:
    """The adapter of a transformers causal LM, or an error naming what is missing."""
    model_type = getattr(model.config, "model_type", None)
    arch = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
    ad = ADAPTERS.get(model_type)
    if ad is None:
        raise UnsupportedArchitectureError(
            f"architecture {arch} (model_type {model_type!r}) is not supported: probekit needs to know which "
            f"modules write attn_out and mlp_out to the residual stream. Supported model types: "
            f"{', '.join(sorted(ADAPTERS))}. Add an Adapter entry to probekit.models.adapters.ADAPTERS "
            f"(and the residual-identity test will check it).")
    missing = []
    try:
        base = model.get_submodule(ad.base)
    except AttributeError:
        missing.append(ad.base)
    else:
        try:
            blocks = base.get_submodule(ad.layers)
        except AttributeError:
            missing.append(f"{ad.base}.{ad.layers}")
        else:
            for sub in (ad.attn, ad.mlp):
                try:
                    blocks[0].get_submodule(sub)
                except (AttributeError, IndexError):
                    missing.append(f"{ad.base}.{ad.layers}[0].{sub}")
        try:
            base.get_submodule(ad.final_norm)
        except AttributeError:
            missing.append(f"{ad.base}.{ad.final_norm}")
    if missing:
        raise UnsupportedArchitectureError(
            f"{arch} (model_type {model_type!r}) does not have the modules its adapter expects: "
            f"{', '.join(missing)}. The transformers implementation changed; update probekit.models.adapters.ADAPTERS.")
    return ad


def base_model(model):
    return model.get_submodule(adapter_for(model).base)


def blocks(model):
    ad = adapter_for(model)
    return model.get_submodule(f"{ad.base}.{ad.layers}")


def sublayer(block, path: str):
    return block.get_submodule(path)


def final_norm(model):
    ad = adapter_for(model)
    return model.get_submodule(f"{ad.base}.{ad.final_norm}")
