"""Layer-streamed extraction: models larger than the memory at hand, each weight read once per run.

The ordinary pass (:mod:`probekit.extraction.forward`) runs batch by batch through all
layers. Streaming runs layer by layer through all batches:

1. the model is built on the ``meta`` device (no memory); the weights outside the
   blocks (embeddings, final norm, GPT-2's position table) are read from the
   safetensors shards; rotary tables and other buffers are computed as usual;
2. every batch goes once through the base model with each block's ``forward``
   replaced by a recorder: that yields block 0's input (the embeddings, scaled or
   position-added exactly as the family does it) and the arguments each block
   receives (masks, rotary cos/sin, per layer type) — so no family-specific
   forward is rewritten here;
3. for ``l = 0 .. L-1``: block ``l``'s tensors are read from the shards
   (``safe_open``, only that block's keys), all batches pass through it with
   extraction's own pooling hooks (:class:`probekit.extraction.forward._Hooks`: the same
   ``resid_pre`` / ``attn_out`` / ``mlp_out`` and the same finite check), each
   batch's hidden state is replaced by the block's output, and the block goes back
   to ``meta`` (freed). The LM head is never read.

Peak memory (bytes; ``s`` = bytes per element of the dtype, ``N`` stimuli padded to
``T_b`` tokens in batch ``b`` of size ``B_b``, ``d`` = d_model, ``f`` = FFN width)::

    E*s + W_block*s + H + A + R
    E       = parameters outside the blocks (vocab*d for the embedding, + the position table for GPT-2)
    W_block = parameters of one block (Llama: d*hd*(2*heads + 2*kv_heads) + 3*d*f + 2*d)
    H       = sum_b B_b*T_b*d*s      hidden states of all stimuli (in memory; with hidden="disk"
                                     they live in a file of size 2H and only one batch is in memory)
    A       = one batch's activations inside a block, ~ B*T*(4d + 3f)*s + B*heads*T^2*s
    R       = the recorded block arguments: per batch a mask (B*T^2) and rotary cos/sin (2*B*T*hd*4)

plus the pooled outputs ``N*L*3*d*4`` when there is no store (with the store they are memory-mapped
files, written through and dropped from memory after each layer: :func:`release_layer`; the heap's freed
pages are returned after each layer too: :func:`trim_heap`). Llama-3.2-3B in bf16: E = 0.79 GB, W_block = 0.20 GB; Llama-3.3-70B: E = 2.1 GB, W_block =
1.71 GB, so 4 GB + H is enough for the 70B. On the CPU, when the checkpoint's dtype is the run's dtype,
safetensors memory-maps the tensors: only the embedding rows actually used are resident, and a block's
bytes are paged in during its first batch (``read_s`` in ``model.timings`` is then only the opening);
measured: the 70B slice (d 8192) streamed at 2.3 GiB peak RSS.

Bytes read from disk = the checkpoint's block and embedding tensors, once (``model.bytes_read``).
"""
from __future__ import annotations

import ctypes
import functools
import json
import mmap
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probekit.models import adapters
from probekit.models import checkpoint
from probekit.core.activations import COMPONENTS
from probekit.models.adapters import adapter_for, blocks
from probekit.extraction.forward import _check_finite, _Hooks, encode, pad_batch, plan_chunks, store_identity
from probekit.models.loading import LoadedModel, ModelUnavailableError, UnsupportedArchitectureError, _torch_dtype
from probekit.models.registry import cache_dir
from probekit.extraction.store import ActivationStore, disk_full_error, preallocated_npy, reserve_blocks


_STREAM_HINT = " or set PROBEKIT_STREAM_DIR to a larger disk, and rerun"


class StreamingError(RuntimeError):
    """Streamed extraction cannot run (missing shard, no weights, not enough disk); the message names it."""


#: families whose blocks can be streamed (every entry of probekit.models.adapters.ADAPTERS; the oracle test covers each)
STREAMABLE = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "gpt2")


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
    streamed = True

    def __init__(self, *, weights: "WeightIndex | None" = None, torch_device: str = "cpu", hidden: str = "auto",
                 hidden_dir: str | None = None, placement=None, **kw):
        super().__init__(**kw)
        self.weights = weights
        self.torch_device = torch_device
        self.hidden = hidden                # where hidden states live between layers: "memory" | "disk" | "auto"
        self.hidden_dir = hidden_dir        # directory for hidden="disk" (default: <cache>/stream-tmp)
        self.placement = placement
        self.timings: dict = {}
        self.pending: list = []             # stimulus sets announced by plan()
        self.precomputed: dict = {}         # their vectors, computed in an earlier pass

    def plan(self, frames, batch_size: int = 32, store=None) -> None:
        plan(self, frames, batch_size, store)

    @property
    def device(self):
        import torch
        return torch.device(self.torch_device)

    @property
    def bytes_read(self) -> int:
        return self.weights.bytes_read if self.weights else 0


def _has_tokenizer(path: Path) -> bool:
    return any((path / f).exists() for f in ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json"))


def load_streamed(name: str, kw: dict, placement, hidden: str = "auto") -> StreamedModel:
    """Build the meta skeleton of the checkpoint ``kw['path']`` and read the weights outside its blocks."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    if "gguf_file" in kw and not (Path(kw["path"]) / "config.json").exists():
        raise StreamingError(f"model {name}: layer streaming reads safetensors shards, not a GGUF file "
                             f"({kw['gguf_file']}); GGUF models are small enough to load in memory")
    path = Path(kw["path"])
    if not (path / "config.json").exists():
        raise ModelUnavailableError(f"{path} has no config.json: not a transformers checkpoint")
    weights = WeightIndex(path)                    # missing shards / no weights: refused here
    if not _has_tokenizer(path):
        raise ModelUnavailableError(f"checkpoint {path} has no tokenizer (tokenizer.json, tokenizer.model or "
                                    f"tokenizer_config.json); copy the tokenizer files next to config.json")
    config = AutoConfig.from_pretrained(str(path))
    if getattr(config, "model_type", None) not in STREAMABLE:
        raise UnsupportedArchitectureError(f"model {name}: model_type {config.model_type!r} cannot be layer-streamed "
                                           f"(streamable: {', '.join(STREAMABLE)})")
    tdtype = _torch_dtype(placement.dtype)
    device = placement.device if placement.device != "auto" else "cuda"
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=tdtype)
    model.eval()
    ad = adapters.adapter_for(model)
    base = getattr(model, ad.base)
    layers_prefix = f"{ad.layers}."
    outside = [n for n, _ in base.named_parameters() if not n.startswith(layers_prefix)]
    names = weights.resolve([f"{ad.base}.{n}" for n in outside], (f"{ad.base}.",))
    _assign(model, weights.read(names, tdtype, device))
    for mod in base.modules():                      # rotary tables etc. were computed on the CPU
        for bname, buf in list(mod.named_buffers(recurse=False)):
            if buf.device.type != "meta":
                mod._buffers[bname] = buf.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:
        raise ModelUnavailableError(f"checkpoint {path}: its tokenizer cannot be loaded ({type(exc).__name__}: "
                                    f"{str(exc)[:200]})") from None
    checkpoint.fix_pad_token(tok, f"checkpoint {path}")
    tok.padding_side = "right"
    dtype_name = placement.dtype
    return StreamedModel(model=model, tokenizer=tok, name=name, fingerprint=f"{kw['fingerprint']}|{dtype_name}",
                         source=kw.get("source", str(path)), dtype=dtype_name, markers=tuple(kw.get("markers", ())),
                         weights=weights, torch_device=device, hidden=hidden, placement=placement)


def _assign(model, tensors: dict) -> None:
    """Put real tensors in place of meta parameters (``name`` relative to ``model``)."""
    import torch
    for n, t in tensors.items():
        mod_name, _, pname = n.rpartition(".")
        mod = model.get_submodule(mod_name)
        mod._parameters[pname] = torch.nn.Parameter(t, requires_grad=False)


def _block_tensors(model, layer: int) -> tuple[str, dict[str, str]]:
    """(prefix of block ``layer``'s parameters, model name -> checkpoint name of each)."""
    ad = adapter_for(model.model)
    block = blocks(model.model)[layer]
    prefix = f"{ad.base}.{ad.layers}.{layer}."
    names = [prefix + n for n, _ in block.named_parameters()]
    return prefix, model.weights.resolve(names, (f"{ad.base}.",))


# ----------------------------------------------------------------------------- running

def hidden_bytes(model, enc, chunks) -> int:
    """Bytes of the hidden states of every stimulus between two layers (padded batches, model dtype)."""
    import torch
    s = torch.finfo(getattr(torch, model.dtype)).bits // 8
    return sum(len(rows) * max(len(enc.input_ids[i]) for i in rows) * model.d_model * s
               for chunk in chunks for rows in chunk)


def _hidden_mode(model, nbytes: int) -> str:
    if model.hidden in ("memory", "disk"):
        return model.hidden
    import psutil
    return "memory" if nbytes <= 0.25 * psutil.virtual_memory().available else "disk"


def _hidden_root(model) -> Path:
    return Path(model.hidden_dir or os.environ.get("PROBEKIT_STREAM_DIR") or cache_dir() / "stream-tmp")


def preflight(model, enc, chunks) -> None:
    """Refuse before any work (and before the store is touched): every block's tensors must be in a shard,
    and the streamed hidden states must fit where they will be kept."""
    for l in range(len(blocks(model.model))):
        _block_tensors(model, l)
    need = hidden_bytes(model, enc, chunks)
    if _hidden_mode(model, need) == "disk":
        root = _hidden_root(model)
        root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(root).free
        if 2 * need > free:
            raise StreamingError(f"not enough disk for the streamed hidden states: {2 * need / 2**30:.2f} GiB "
                                 f"needed in {root} (two layers' worth: {len(enc.input_ids)} stimuli x "
                                 f"d_model {model.d_model} x {model.dtype}), {free / 2**30:.2f} GiB free; free "
                                 f"space, set PROBEKIT_STREAM_DIR to a larger disk, or use fewer stimuli")


class _DiskStates:
    """Hidden states of all batches in two memory-mapped files (read from one, write the other)."""

    def __init__(self, root: Path, shapes: list[tuple], dtype):
        import torch
        self.dir = Path(tempfile.mkdtemp(prefix="hidden-", dir=root))
        self.shapes = shapes
        self.offsets = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
        n = int(self.offsets[-1])
        with disk_full_error(f"layer streaming: the disk filled up reserving {2 * n * dtype.itemsize >> 20} MB for "
                             f"the hidden states in {self.dir}", _STREAM_HINT,
                             cleanup=lambda: shutil.rmtree(self.dir, ignore_errors=True)):
            for k in (0, 1):
                reserve_blocks(self.dir / f"h{k}.bin", n * dtype.itemsize)
        self.files = [torch.from_file(str(self.dir / f"h{k}.bin"), shared=True, size=n, dtype=dtype)
                      for k in (0, 1)]
        self.cur = 0

    def get(self, b):
        o = self.offsets
        return self.files[self.cur][o[b]:o[b + 1]].view(self.shapes[b])

    def put(self, b, h):
        o = self.offsets
        self.files[1 - self.cur][o[b]:o[b + 1]].view(self.shapes[b]).copy_(h)

    def flip(self):
        self.cur = 1 - self.cur

    def close(self):
        self.files = []
        shutil.rmtree(self.dir, ignore_errors=True)


class _MemStates:
    def __init__(self):
        self.h: dict = {}
        self.nxt: dict = {}

    def get(self, b):
        return self.h[b]

    def put(self, b, h):
        old = self.h.pop(b, None)     # the input of batch b is no longer needed: peak = H + one batch
        if old is not None and old.shape == h.shape and old.dtype == h.dtype and old.device == h.device:
            old.copy_(h)              # reuse its storage: no new allocation per batch and layer, so the heap
            h = old                   # does not fragment (freed inputs interleaved with new outputs)
        self.nxt[b] = h

    def flip(self):
        self.h, self.nxt = self.nxt, {}

    def close(self):
        self.h, self.nxt = {}, {}


@dataclass
class _Job:
    """One stimulus set in a streamed pass: its encoding, batches and where its pooled vectors go."""
    enc: object
    chunks: list
    stimuli: object
    arrays: dict
    tmp: Path | None = None            # for a planned experiment: its temporary memory-mapped arrays


def _job_key(enc) -> str:
    import hashlib
    h = hashlib.sha256()
    for ids, w in zip(enc.input_ids, enc.weights):
        h.update(np.asarray(ids, np.int64).tobytes())
        h.update(w.tobytes())
    return h.hexdigest()


def plan(model, frames, batch_size: int = 32, store=None) -> None:
    """Announce the stimulus sets a run will extract (``probekit.pipeline.replicate`` does this), so the first
    streamed extraction computes all of them in the same pass: each weight is read once per run, not once per
    set. Sets whose store entry is already complete are skipped; the others' vectors wait in temporary
    memory-mapped files until their own :func:`probekit.extraction.forward.extract` call copies them into the store."""
    model.pending = [(f, batch_size, store) for f in frames]


def _pending_jobs(model, exclude: set) -> list:
    jobs = []
    for frame, batch_size, store in getattr(model, "pending", []):
        pooling = frame.attrs.get("pooling") or "target_mean"
        stim = frame.reset_index(drop=True)
        max_len = getattr(model.config, "max_position_embeddings", None)
        enc = encode(model.tokenizer, stim, pooling, model.name, max_length=max_len)
        key = _job_key(enc)
        if key in exclude or key in model.precomputed:
            continue
        if store not in (None, False):
            st = store if isinstance(store, ActivationStore) else ActivationStore(None if store is True else store)
            if st.entry(store_identity(model, stim, pooling)).is_complete():
                continue
        exclude.add(key)
        jobs.append((key, _Job(enc, plan_chunks([len(x) for x in enc.input_ids], batch_size), stim, {})))
    need = sum(len(j.stimuli) for _, j in jobs) * model.n_layers * len(COMPONENTS) * model.d_model * 4
    if jobs:
        root = _hidden_root(model)
        root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(root).free
        if need > free:
            raise StreamingError(f"not enough disk for the pooled vectors of the {len(jobs)} other planned stimulus "
                                 f"sets: {need / 2**30:.2f} GiB needed in {root}, {free / 2**30:.2f} GiB free; free "
                                 f"space or set PROBEKIT_STREAM_DIR")
        with disk_full_error(f"layer streaming: the disk filled up reserving {need >> 20} MB for the pooled vectors "
                             f"of {len(jobs)} planned stimulus set(s) in {root}", _STREAM_HINT,
                             cleanup=lambda: [shutil.rmtree(j.tmp, ignore_errors=True) for _, j in jobs if j.tmp]):
            for _, j in jobs:                      # blocks reserved: a full disk is this error, never SIGBUS
                j.tmp = Path(tempfile.mkdtemp(prefix="pooled-", dir=root))
                j.arrays = {(l, c): preallocated_npy(j.tmp / f"L{l:03d}_{c}.npy", np.float32,
                                                     (len(j.stimuli), model.d_model))
                            for l in range(model.n_layers) for c in COMPONENTS}
    return jobs


def run_streamed(model, enc, chunks, stimuli, arrays, done: set, on_chunk, progress) -> None:
    """Same contract as :func:`probekit.extraction.forward._run`, layer-major; chunks are marked done only at the end
    (a crash leaves the store entry incomplete, never half-marked). With :func:`plan`, the first call streams
    every planned stimulus set at once and later calls copy their vectors."""
    todo = [k for k in range(len(chunks)) if k not in done]
    if not todo:
        return
    key = _job_key(enc)
    pre = model.precomputed.pop(key, None)
    if pre is not None:                            # computed in an earlier call's pass
        for lc, arr in pre.arrays.items():
            arrays[lc][:] = arr
        pre.arrays = {}
        shutil.rmtree(pre.tmp, ignore_errors=True)
    else:
        others = _pending_jobs(model, {key})
        try:
            _stream(model, [_Job(enc, chunks, stimuli, arrays)] + [j for _, j in others], progress)
        except BaseException:
            for _, j in others:
                j.arrays = {}
                shutil.rmtree(j.tmp, ignore_errors=True)
            raise
        for k, j in others:
            for arr in j.arrays.values():
                arr.flush()
            model.precomputed[k] = j
    if on_chunk is not None:
        for k in todo:
            on_chunk(k)


def _stream(model, jobs: list, progress) -> None:
    """The layer-major pass over every batch of every job."""
    import torch
    batches = [(j, rows) for j in jobs for chunk in j.chunks for rows in chunk]
    device = model.torch_device
    pad_id = model.tokenizer.pad_token_id
    base = getattr(model.model, _base_attr(model))
    blist = blocks(model.model)
    L = len(blist)
    nbytes = sum(hidden_bytes(model, j.enc, j.chunks) for j in jobs)
    mode = _hidden_mode(model, nbytes)
    tdtype = getattr(torch, model.dtype)
    shapes = [(len(rows), max(len(j.enc.input_ids[i]) for i in rows), model.d_model) for j, rows in batches]
    n_texts = sum(len(j.stimuli) for j in jobs)
    states = _DiskStates(_hidden_root(model), shapes, tdtype) if mode == "disk" else _MemStates()
    hooks = _Hooks(model.model)
    calls: list[list] = []             # per batch: per layer (args, kwargs) the base model passes to the block
    weights_t = []
    n_tok = sum(s[0] * s[1] for s in shapes)
    quiet = progress is False
    model.timings["layers"] = []
    t0 = time.perf_counter()
    try:
        # 1. embeddings and the arguments of every block, per batch
        for b, (job, rows) in enumerate(batches):
            enc = job.enc
            input_ids, mask, W = pad_batch([enc.input_ids[i] for i in rows], pad_id,
                                           [enc.weights[i] for i in rows])
            rec: list = [None] * L
            first: list = []

            def recorder(l, hidden_states, *args, **kwargs):
                rec[l] = (args, kwargs)
                if l == 0:
                    first.append(hidden_states)
                return hidden_states
            for l, blk in enumerate(blist):
                blk.forward = (lambda l: lambda *a, **k: recorder(l, *a, **k))(l)
            try:
                hooks.weights = W.to(device)
                with torch.inference_mode():
                    base(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False)
            finally:
                for blk in blist:
                    del blk.forward
            calls.append(rec)
            weights_t.append(W)
            h = first[0]
            states.put(b, h.cpu() if mode == "disk" else h)
        states.flip()
        # 2. layer by layer
        if not quiet:
            print(f"[stream {model.name}] {n_texts} texts in {len(jobs)} set(s), {n_tok} tokens (padded), {L} layers; "
                  f"hidden states in {mode} ({nbytes / 2**20:.0f} MiB); embeddings {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr, flush=True)
        for l in range(L):
            tl = time.perf_counter()
            blk = blist[l]
            prefix, names = _block_tensors(model, l)
            _assign(blk, {n[len(prefix):]: t for n, t in model.weights.read(names, tdtype, device).items()})
            t_read = time.perf_counter() - tl
            try:
                for b, (job, rows) in enumerate(batches):
                    args, kwargs = calls[b][l]
                    hooks.weights = weights_t[b].to(device)
                    hooks.out = {}
                    h = states.get(b).to(device)
                    with torch.inference_mode():       # (put's in-place copy into an inference tensor too)
                        h = blk(h, *args, **kwargs)
                        if isinstance(h, (tuple, list)):
                            h = h[0]
                        _check_finite(hooks.out, rows, job.stimuli, model.name)
                        idx = np.asarray(rows)
                        for key, t in hooks.out.items():
                            job.arrays[key][idx] = t.cpu().numpy()
                        states.put(b, h if mode == "memory" else h.cpu())
            finally:
                blk.to("meta")                   # free the block's weights
            states.flip()
            for job in jobs:
                release_layer(job.arrays, l)
            trim_heap()
            dt = time.perf_counter() - tl
            model.timings["layers"].append({"layer": l, "read_s": round(t_read, 3), "total_s": round(dt, 3)})
            if not quiet:                    # one line per layer: visible in logs and under pytest -s
                print(f"[stream {model.name}] layer {l + 1}/{L}: {dt:.1f} s (read {t_read:.1f} s), "
                      f"{n_texts / dt:.1f} texts/s, {n_tok / dt:.0f} tok/s",
                      file=sys.stderr, flush=True)
    finally:
        hooks.remove()
        states.close()
    model.timings["stream_s"] = round(time.perf_counter() - t0, 3)
    model.timings["hidden_bytes"] = nbytes
    model.timings["hidden_mode"] = mode


def release_layer(arrays: dict, layer: int) -> None:
    """Write a finished layer's pooled vectors through to their memory-mapped files and drop the pages from
    this process (the data stays in the file). Without this, the pooled vectors of every planned set stay
    resident until the run ends (``N*L*3*d*4``: 3.2 GB for the 3B's 3,057 texts, 24 GB for the 70B's),
    which is what layer streaming exists to avoid. Plain in-memory arrays are left alone."""
    for c in COMPONENTS:
        arr = arrays.get((layer, c))
        mm = getattr(arr, "_mmap", None)
        if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
            continue
        arr.flush()
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):        # e.g. a closed map: the pages go with it anyway
            pass


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):     # not glibc
        return None


def trim_heap() -> None:
    """Give the heap's free pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere). Each layer frees
    every batch's hidden states while it allocates the next layer's, and glibc keeps the freed pages: in the
    3B run the heap held 1.9 GB of a 3.5 GB RSS for hidden states of 0.6 GB."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _base_attr(model) -> str:
    return adapter_for(model.model).base
