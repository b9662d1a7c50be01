"""A model loaded for extraction: the transformers model, its tokenizer and its identity.

:class:`LoadedModel` is what every loader returns (:func:`probekit.models.load_model`, the layer-streamed
loader :mod:`probekit.models.streamed`, the in-memory wrappers :mod:`probekit.models.in_memory`) and what
extraction runs on; :func:`weights_digest` is the part of its fingerprint that hashes the weights in
memory; :func:`loaded_model` is the tail every loader shares (eval mode, no gradients, right padding, the
identity); :func:`torch_dtype` maps a dtype name to torch's.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

from probekit.models.placement import normalize_dtype

__all__ = ["LoadedModel", "weights_digest", "loaded_model", "torch_dtype", "FULL_DIGEST_BYTES"]

# --------------------------------------------------------------------------- weights in memory

FULL_DIGEST_BYTES = 2 << 30      # models up to 2 GiB of parameters are hashed in full
_PRIME = 7919


def weights_digest(model, full_limit: int = FULL_DIGEST_BYTES) -> str:
    """A digest of the parameters *in memory* (names, shapes, dtypes and values).

    * Up to ``full_limit`` bytes of parameters (2 GiB: SmolLM2-135M and Gemma-3-270M in fp32,
      0.5 and 1.1 GB), every byte goes through SHA256: any change to any weight changes the
      digest (tensors hashed on two threads).
    * Above it (a 3B model is 6 GB in bf16, a 70B 140 GB), a deterministic sample of every
      parameter tensor: viewed as a matrix (last dimension = columns), one element of every row
      and one of every column, at positions that differ from row to row. That is rows + columns
      elements per tensor (~14 M for a 70B), gathered where the tensor lives (GPU included),
      where a full hash of 140 GB would take minutes. It changes
      when a checkpoint is retrained, fine-tuned or re-initialised (every element changes) and
      when whole rows or columns are ablated or edited (a neuron, a head's slice, a token
      embedding): the in-memory edits interpretability code makes. A single scalar edited in a
      model this large may go unseen.
    * Parameters on the ``meta`` device (offloaded by accelerate) are not in memory: only their
      names and shapes enter; the load-time file digest in the fingerprint covers their values.
    """
    import torch
    params = list(model.named_parameters())          # tied weights once
    total = sum(p.numel() * p.element_size() for _, p in params)
    mode = "full" if total <= full_limit else "rows+cols"

    def one(item) -> bytes:
        name, p = item
        h = hashlib.sha256(f"{name}:{tuple(p.shape)}:{p.dtype}:{p.device.type == 'meta'};".encode())
        if p.device.type != "meta":
            with torch.no_grad():
                t = p.detach() if mode == "full" else _rows_and_columns(p.detach())
                t = t.contiguous().reshape(-1).cpu()
            h.update(memoryview(t.view(torch.uint8).numpy()))      # hashlib releases the GIL here
        return h.digest()

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        parts = list(pool.map(one, params))
    return hashlib.sha256(mode.encode() + b"".join(parts)).hexdigest()[:32]


def _rows_and_columns(t):
    """One element of every row and of every column of ``t`` viewed as (-1, last dim), at
    positions that move from row to row (index_select: advanced indexing is ~500x slower on CPU)."""
    import torch
    c = t.shape[-1] if t.dim() else 1
    r = t.numel() // max(c, 1)
    i = torch.arange(r, device=t.device)
    j = torch.arange(c, device=t.device)
    flat = torch.cat([i * c + (i * _PRIME) % c, ((j * _PRIME) % r) * c + j])
    return t.reshape(-1).index_select(0, flat)


# --------------------------------------------------------------------------- loaded model

class LoadedModel:
    """A causal LM ready for extraction: the transformers model, its tokenizer and identity.

    ``fingerprint`` is what caches key on. It is recomputed on every access from ``origin``
    (where the weights came from: GGUF SHA256, checkpoint digest, hub id, random seed; plus the
    dtype) and :func:`weights_digest` of the weights in memory *now*, so a model edited in
    memory under the same name is another model to the activation store.
    ``source`` says where the weights came from, for reports (a path, a PyPI package, a hub id,
    an environment variable). A random-init control (``NAME+random:SEED``) has
    ``random_seed`` set and ``base_name`` = NAME.
    """

    def __init__(self, model, tokenizer, name: str, fingerprint: str, source: str, dtype: str,
                 markers: tuple[str, ...] = (), random_seed: int | None = None, base_name: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.origin = fingerprint
        self.source = source
        self.dtype = dtype
        self.markers = tuple(markers)
        self.random_seed = random_seed
        self.base_name = base_name
        self.placement = None            # probekit.models.placement.Placement when dtype/device were "auto"

    @property
    def fingerprint(self) -> str:
        return f"{self.origin}|weights:{weights_digest(self.model)}"

    @property
    def is_random_init(self) -> bool:
        return self.random_seed is not None

    @property
    def config(self):
        return self.model.config

    @property
    def n_layers(self) -> int:
        cfg = getattr(self.model.config, "text_config", None) or self.model.config
        return int(getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer"))

    @property
    def d_model(self) -> int:
        cfg = getattr(self.model.config, "text_config", None) or self.model.config
        return int(getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd"))

    @property
    def device(self):
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        return (f"LoadedModel({self.name!r}, {type(self.model).__name__}, layers={self.n_layers}, "
                f"d_model={self.d_model}, dtype={self.dtype}, device={self.device}, source={self.source!r})")



def loaded_model(model, tokenizer, name: str, kw: dict, dtype_name: str, cls=None, **extra) -> "LoadedModel":
    """The tail of every load: ``model`` in eval mode without gradients, ``tokenizer`` padding on the right,
    wrapped as ``cls`` (default :class:`LoadedModel`) with the identity of ``kw`` (what
    :func:`probekit.models.loading.resolve` found: ``fingerprint``, ``source``, ``markers``, ``random_seed``,
    ``base_name``) and ``dtype_name``; ``extra`` goes to ``cls``."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tokenizer.padding_side = "right"
    return (cls or LoadedModel)(model=model, tokenizer=tokenizer, name=name,
                                fingerprint=f"{kw['fingerprint']}|{dtype_name}",
                                source=kw.get("source", kw.get("path")), dtype=dtype_name,
                                markers=tuple(kw.get("markers", ())), random_seed=kw.get("random_seed"),
                                base_name=kw.get("base_name"), **extra)


def torch_dtype(dtype):
    """A dtype name (float32, bfloat16, float16 or fp32/bf16/fp16) or torch dtype as a torch dtype; ``None``
    for ``None`` / ``"auto"``; an unknown name raises the placement's error naming the known ones."""
    import torch
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        return dtype
    return getattr(torch, normalize_dtype(dtype))
