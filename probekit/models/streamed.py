"""The layer-streamed model: its loading half. The runner that streams it is
:mod:`probekit.extraction.streaming` (its module docstring has the algorithm and the memory bound).

:func:`load_streamed` builds a checkpoint's model on the ``meta`` device (no memory), reads only the
weights outside the blocks (embeddings, final norm, GPT-2's position table) from the safetensors shards and
returns a :class:`StreamedModel`, whose blocks stay on disk (:class:`WeightIndex`: which shard holds each
tensor, checked up front) until extraction streams them, each weight read once per run.

A streamed model also holds one *planning session*: :meth:`StreamedModel.plan` announces the stimulus sets
a run will extract, so the first extraction computes all of them in one pass; the others' pooled vectors
wait in temporary ``pooled-*`` directories until their own extraction copies them. :meth:`StreamedModel.close`
(or leaving ``with model.planned(frames):``) ends the session and removes every temporary a set that was
never extracted left behind.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from probekit.core.errors import ModelUnavailableError, UnsupportedArchitectureError
from probekit.models import adapters, checkpoint
from probekit.models.loaded import LoadedModel, loaded_model, torch_dtype

__all__ = ["StreamingError", "STREAMABLE", "WeightIndex", "StreamedModel", "load_streamed", "assign"]


class StreamingError(RuntimeError):
    """Streamed extraction cannot run (missing shard, no weights, not enough disk); the message names it."""


#: families whose blocks can be streamed: every entry of the adapter table (the oracle test covers each)
STREAMABLE = tuple(adapters.ADAPTERS)


# ----------------------------------------------------------------------------- weights on disk

class WeightIndex:
    """Which safetensors file holds each tensor of a checkpoint directory (checked up front)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        index = self.path / "model.safetensors.index.json"
        if index.exists():
            try:
                wmap = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as exc:
                raise StreamingError(f"{index}: unreadable safetensors index ({exc})") from None
            missing = sorted({f for f in wmap.values() if not (self.path / f).exists()})
            if missing:
                n = sum(1 for f in wmap.values() if f in missing)
                raise StreamingError(f"checkpoint {self.path}: shard(s) {', '.join(missing)} listed in "
                                     f"model.safetensors.index.json are missing ({n} tensors); download or copy "
                                     f"them again")
            self.files = dict(wmap)
        else:
            shards = sorted(self.path.glob("*.safetensors"))
            if not shards:
                other = sorted(p.name for p in self.path.iterdir() if p.suffix in {".bin", ".pt", ".gguf", ".pth"})
                raise StreamingError(
                    f"checkpoint {self.path} has no *.safetensors weights"
                    + (f" (found {', '.join(other)}: streaming reads safetensors only; re-save the model with "
                       f"save_pretrained(..., safe_serialization=True))" if other else "")
                    + "; layer streaming needs the weights as safetensors shards")
            from safetensors import safe_open
            self.files = {}
            for p in shards:
                with safe_open(str(p), "pt") as f:
                    self.files.update({k: p.name for k in f.keys()})
        self.bytes_read = 0

    def resolve(self, names: list[str], prefix_alternatives: tuple[str, ...]) -> dict[str, str]:
        """Model parameter name -> checkpoint tensor name (tries the name without each prefix too)."""
        out = {}
        for n in names:
            for cand in (n,) + tuple(n[len(p):] for p in prefix_alternatives if n.startswith(p)):
                if cand in self.files:
                    out[n] = cand
                    break
            else:
                raise StreamingError(f"checkpoint {self.path}: tensor {n!r} is in no shard (the index lists "
                                     f"{len(self.files)} tensors); the checkpoint is incomplete or of another "
                                     f"architecture")
        return out

    def read(self, names: dict[str, str], dtype, device) -> dict:
        """Read tensors (model name -> checkpoint name) from their shards, cast to ``dtype`` on ``device``."""
        from safetensors import safe_open
        by_file: dict[str, list[tuple[str, str]]] = {}
        for n, c in names.items():
            by_file.setdefault(self.files[c], []).append((n, c))
        out = {}
        for fname, items in by_file.items():
            with safe_open(str(self.path / fname), "pt", device="cpu") as f:
                for n, c in items:
                    t = f.get_tensor(c)
                    self.bytes_read += t.numel() * t.element_size()
                    out[n] = t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)
        return out


# ----------------------------------------------------------------------------- the model

class StreamedModel(LoadedModel):
    """A :class:`LoadedModel` whose blocks stay on disk until extraction streams them."""

    def __init__(self, *, weights: "WeightIndex | None" = None, torch_device: str = "cpu", hidden: str = "auto",
                 hidden_dir: str | None = None, placement=None, **kw):
        super().__init__(**kw)
        self.weights = weights
        self.torch_device = torch_device
        self.hidden = hidden                # where hidden states live between layers: "memory" | "disk" | "auto"
        self.hidden_dir = hidden_dir        # directory for hidden="disk" (default: <cache>/stream-tmp)
        self.placement = placement
        self.timings: dict = {}
        self.pending: list = []             # the planning session: stimulus sets announced by plan()
        self.precomputed: dict = {}         # their vectors, computed in an earlier pass (each with discard())

    def plan(self, frames, batch_size: int = 32, store=None) -> None:
        """Announce the stimulus sets a run will extract (``probekit.pipeline.replicate`` does this), so the
        first streamed extraction computes all of them in the same pass: each weight is read once per run, not
        once per set. Sets whose store entry is already complete are skipped; the others' vectors wait in
        temporary memory-mapped files until their own extraction copies them into the store, or until
        :meth:`close`."""
        self.pending = [(f, batch_size, store) for f in frames]

    def close(self) -> None:
        """End the planning session: forget the planned sets and remove the temporary vectors of those
        computed but never extracted. The model stays usable (a later extraction streams on its own)."""
        self.pending = []
        while self.precomputed:
            _, job = self.precomputed.popitem()
            job.discard()

    @contextlib.contextmanager
    def planned(self, frames, batch_size: int = 32, store=None):
        """``with model.planned(frames):`` -- :meth:`plan` on entry, :meth:`close` on exit (error or not)."""
        self.plan(frames, batch_size, store)
        try:
            yield self
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def block_tensors(self, layer: int) -> tuple[str, dict[str, str]]:
        """(prefix of block ``layer``'s parameters, model name -> checkpoint name of each); a tensor in no
        shard raises :class:`StreamingError` naming it."""
        ad = adapters.adapter_for(self.model)
        block = adapters.blocks(self.model)[layer]
        prefix = f"{ad.base}.{ad.layers}.{layer}."
        names = [prefix + n for n, _ in block.named_parameters()]
        return prefix, self.weights.resolve(names, (f"{ad.base}.",))

    @property
    def device(self):
        import torch
        return torch.device(self.torch_device)

    @property
    def bytes_read(self) -> int:
        return self.weights.bytes_read if self.weights else 0


def load_streamed(name: str, kw: dict, placement, hidden: str = "auto") -> StreamedModel:
    """Build the meta skeleton of the checkpoint ``kw['path']`` and read the weights outside its blocks."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM
    if "gguf_file" in kw and not (Path(kw["path"]) / "config.json").exists():
        raise StreamingError(f"model {name}: layer streaming reads safetensors shards, not a GGUF file "
                             f"({kw['gguf_file']}); GGUF models are small enough to load in memory")
    path = Path(kw["path"])
    if not (path / "config.json").exists():
        raise ModelUnavailableError(f"{path} has no config.json: not a transformers checkpoint")
    weights = WeightIndex(path)                    # missing shards / no weights: refused here
    if not checkpoint.has_tokenizer(path):
        raise ModelUnavailableError(f"checkpoint {path} has {checkpoint.NO_TOKENIZER}")
    tok = checkpoint.load_tokenizer({"path": str(path)})          # before any weight is read
    config = AutoConfig.from_pretrained(str(path))
    if getattr(config, "model_type", None) not in STREAMABLE:
        raise UnsupportedArchitectureError(f"model {name}: model_type {config.model_type!r} cannot be layer-streamed "
                                           f"(streamable: {', '.join(STREAMABLE)})")
    tdtype = torch_dtype(placement.dtype)
    device = placement.device if placement.device != "auto" else "cuda"
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=tdtype)
    ad = adapters.adapter_for(model)
    base = getattr(model, ad.base)
    layers_prefix = f"{ad.layers}."
    outside = [n for n, _ in base.named_parameters() if not n.startswith(layers_prefix)]
    names = weights.resolve([f"{ad.base}.{n}" for n in outside], (f"{ad.base}.",))
    assign(model, weights.read(names, tdtype, device))
    for mod in base.modules():                      # rotary tables etc. were computed on the CPU
        for bname, buf in list(mod.named_buffers(recurse=False)):
            if buf.device.type != "meta":
                mod._buffers[bname] = buf.to(device)
    return loaded_model(model, tok, name, dict(kw, source=kw.get("source", str(path))), placement.dtype,
                        cls=StreamedModel, weights=weights, torch_device=device, hidden=hidden, placement=placement)


def assign(model, tensors: dict) -> None:
    """Put real tensors in place of meta parameters (``name`` relative to ``model``)."""
    import torch
    for n, t in tensors.items():
        mod_name, _, pname = n.rpartition(".")
        mod = model.get_submodule(mod_name)
        mod._parameters[pname] = torch.nn.Parameter(t, requires_grad=False)
