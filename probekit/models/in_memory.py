"""Models already in memory, from other tools, as the :class:`~probekit.models.loaded.LoadedModel` that
extraction runs on (:func:`as_loaded_model`; :func:`probekit.models.load_model` hands such objects here):

- ``(hf_model, tokenizer)``: a transformers causal LM and its (fast) tokenizer;
- a TransformerLens ``TransformerBridge`` (TransformerLens >= 4): the transformers model it wraps
  (``bridge.original_model``) and ``bridge.tokenizer``;
- an nnsight ``LanguageModel``: the transformers model it wraps and ``lm.tokenizer``
  (dispatched first if it was created lazily, with meta weights);
- a TransformerLens ``HookedTransformer`` (TransformerLens < 4): TransformerLens' own forward pass
  with its own hooks ``blocks.{l}.hook_resid_pre`` / ``hook_attn_out`` / ``hook_mlp_out``
  (:class:`HookedTransformerRunner`), pooled exactly like probekit's hooks.

The wrapped transformers model is hooked by probekit's own adapters (:mod:`probekit.models.adapters`), so
the components mean what they mean everywhere in probekit. Identity: the fingerprint is
``in-memory:<architecture>|tokenizer:<digest>|<dtype>`` plus the digest of the weights in memory
(:func:`probekit.models.loaded.weights_digest`), recomputed on every access like any LoadedModel's: the same
weights and tokenizer reach the same activation-store entry through any wrapper, and an edited model
never gets the original's cached activations. docs/interop.md shows both routes (this one and
:func:`probekit.extraction.interop.target_token_weights`).
"""
from __future__ import annotations

import hashlib

from probekit.core.errors import ModelInputError
from probekit.models import adapters
from probekit.models.loaded import LoadedModel

__all__ = ["as_loaded_model", "HookedTransformerRunner", "check_tokenizer"]

_WHAT_TO_PASS = ("pass probekit.load_model(NAME_OR_PATH), a (transformers_model, tokenizer) pair, a "
                 "TransformerLens HookedTransformer or TransformerBridge, or an nnsight LanguageModel")


def _kind(obj) -> str | None:
    """Which tool's object ``obj`` is, by its class's module (neither tool is imported here)."""
    for cls in type(obj).__mro__:
        mod, name = cls.__module__ or "", cls.__name__
        if mod.startswith("transformer_lens") and name == "TransformerBridge":
            return "tl-bridge"
        if mod.startswith("transformer_lens") and name == "HookedTransformer":
            return "tl-hooked"
        if mod.startswith("nnsight") and name == "LanguageModel":
            return "nnsight"
    return None



def _tokenizer_digest(tokenizer) -> str:
    """What the tokens depend on: the fast tokenizer's full definition (vocabulary, merges, normalizer,
    post-processor: the special tokens it adds)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelInputError(f"tokenizer {type(tokenizer).__name__} is not a fast (Rust) tokenizer: probekit's "
                              f"pooling needs character offsets; load it with AutoTokenizer.from_pretrained"
                              f"(..., use_fast=True)")
    return hashlib.sha256(backend.to_str().encode()).hexdigest()[:16]


def check_tokenizer(tokenizer, where: str) -> None:
    if tokenizer is None:
        raise ModelInputError(f"{where} has no tokenizer; pass (model, tokenizer) with the model's fast tokenizer "
                              f"(AutoTokenizer.from_pretrained(...))")
    if not callable(tokenizer) or not hasattr(tokenizer, "all_special_ids"):
        raise ModelInputError(f"{where}: {type(tokenizer).__name__} is not a transformers tokenizer; pass "
                              f"(model, AutoTokenizer.from_pretrained(...))")


def _from_hf(hf_model, tokenizer, name: str | None, kind: str) -> LoadedModel:
    import torch
    if not isinstance(hf_model, torch.nn.Module) or not hasattr(hf_model, "config"):
        raise ModelInputError(f"{kind}: {type(hf_model).__name__} is not a transformers model; {_WHAT_TO_PASS}")
    check_tokenizer(tokenizer, kind)
    params = list(hf_model.parameters())
    if any(p.device.type == "meta" for p in params):
        raise ModelInputError(f"{kind}: the model's weights are on the meta device (not loaded); load them first "
                              f"(nnsight: LanguageModel(..., dispatch=True) or lm.dispatch())")
    adapters.adapter_for(hf_model)            # unsupported architecture: the adapter table's message, now
    hf_model.eval()
    dtype = str(params[0].dtype).replace("torch.", "")
    arch = (getattr(hf_model.config, "architectures", None) or [type(hf_model).__name__])[0]
    name = name or str(getattr(hf_model.config, "_name_or_path", "") or arch).rstrip("/").split("/")[-1] or arch
    origin = f"in-memory:{arch}|tokenizer:{_tokenizer_digest(tokenizer)}|{dtype}"
    return LoadedModel(model=hf_model, tokenizer=tokenizer, name=name, fingerprint=origin,
                       source=f"{kind} ({type(hf_model).__name__} in memory)", dtype=dtype)


def as_loaded_model(model, tokenizer=None, name: str | None = None) -> LoadedModel:
    """What :func:`probekit.extract` runs on, from any of the objects listed in the module docstring.

    ``tokenizer``: for a bare transformers model (else the pair's second element, or the tool's own).
    ``name``: the model's display name (default: the checkpoint's name from its config)."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, list) and len(model) == 2:
        model = tuple(model)
    if isinstance(model, tuple):
        if len(model) != 2:
            raise ModelInputError(f"a tuple of {len(model)} items; {_WHAT_TO_PASS}")
        model, tokenizer = model
        return _from_hf(model, tokenizer, name, "(model, tokenizer)")
    kind = _kind(model)
    if kind == "tl-bridge":
        hf = getattr(model, "original_model", None)
        if getattr(getattr(model, "cfg", None), "compatibility_mode", False) or getattr(model, "compatibility_mode",
                                                                                        False):
            raise ModelInputError("TransformerBridge in compatibility mode (enable_compatibility_mode() processed "
                                  "its weights: folded norms change the residual stream's basis); pass a bridge "
                                  "without it, or the transformers model and tokenizer")
        return _from_hf(hf, tokenizer or _own_tokenizer(model), name, "TransformerBridge")
    if kind == "nnsight":
        if not getattr(model, "dispatched", True):
            model.dispatch()                  # a lazily created LanguageModel: load the real weights now
        hf = getattr(model, "_module", None)
        return _from_hf(hf, tokenizer or getattr(model, "tokenizer", None), name, "nnsight LanguageModel")
    if kind == "tl-hooked":
        return _from_hooked(model, tokenizer, name)
    if isinstance(model, str):
        raise ModelInputError(f"model {model!r} is a name: load it first with probekit.load_model({model!r})")
    try:
        import torch
        is_module = isinstance(model, torch.nn.Module)
    except ImportError:                       # pragma: no cover (torch is a dependency)
        is_module = False
    if is_module and hasattr(model, "config"):
        if tokenizer is None:
            raise ModelInputError(f"a bare {type(model).__name__} has no tokenizer; pass (model, tokenizer), "
                                  f"e.g. probekit.extract((model, AutoTokenizer.from_pretrained(...)), stimuli)")
        return _from_hf(model, tokenizer, name, type(model).__name__)
    raise ModelInputError(f"cannot extract from a {type(model).__module__}.{type(model).__name__}; {_WHAT_TO_PASS}")


def _own_tokenizer(tl_model):
    """The checkpoint's own tokenizer behind a TransformerBridge or HookedTransformer. TransformerLens
    reloads the tokenizer it is given with ``add_bos_token=True`` (its ``to_tokens`` convention); probekit
    tokenizes as the checkpoint's tokenizer does (SmolLM2: no BOS), so TL's tokenizer is reloaded from the
    same files without that override. Pass ``tokenizer=`` to choose another (``model.tokenizer``: TL's)."""
    tok = getattr(tl_model, "tokenizer", None)
    kw = dict(getattr(tok, "init_kwargs", None) or {})
    if tok is None or not kw.get("add_bos_token"):
        return tok
    path = kw.pop("name_or_path", None) or getattr(tok, "name_or_path", None)
    kw.pop("add_bos_token")
    try:
        from transformers import AutoTokenizer
        own = AutoTokenizer.from_pretrained(path, **kw)
    except Exception as exc:                     # files gone, hub id offline
        raise ModelInputError(f"{type(tl_model).__name__}: its tokenizer was reloaded by TransformerLens with "
                              f"add_bos_token=True and the original ({path!r}) cannot be reloaded "
                              f"({type(exc).__name__}); pass it: as_loaded_model(model, tokenizer=TOKENIZER) "
                              f"(or tokenizer=model.tokenizer for TransformerLens' BOS convention)") from None
    return own


# --------------------------------------------------------------------------- TransformerLens < 4

class HookedTransformerRunner(LoadedModel):
    """A TransformerLens ``HookedTransformer``: its forward pass, its hooks. ``runs_own_hooks`` tells
    extraction to pool through :meth:`hook_points` instead of probekit's transformers adapters."""

    runs_own_hooks = True

    @property
    def n_layers(self) -> int:
        return int(self.model.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.model.cfg.d_model)

    @property
    def config(self):
        return self.model.cfg

    def hook_points(self):
        """``[(layer, component, HookPoint)]`` for every block."""
        out = []
        for l, block in enumerate(self.model.blocks):
            for comp in ("resid_pre", "attn_out", "mlp_out"):
                out.append((l, comp, getattr(block, f"hook_{comp}")))
        return out

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids, attention_mask=attention_mask, return_type=None)


def _from_hooked(model, tokenizer, name):
    tokenizer = tokenizer or _own_tokenizer(model)
    check_tokenizer(tokenizer, "HookedTransformer")
    cfg = model.cfg
    params = list(model.parameters())
    dtype = str(params[0].dtype).replace("torch.", "")
    processed = [k for k in ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")
                 if getattr(cfg, k, False)]
    origin = (f"in-memory:HookedTransformer:{cfg.model_name}|tokenizer:{_tokenizer_digest(tokenizer)}|"
              f"{dtype}|processed:{','.join(processed) or 'none'}")
    model.eval()
    return HookedTransformerRunner(model=model, tokenizer=tokenizer, name=name or str(cfg.model_name),
                                   fingerprint=origin, source=f"TransformerLens HookedTransformer {cfg.model_name}",
                                   dtype=dtype)
