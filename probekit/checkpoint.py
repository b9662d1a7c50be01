"""What a checkpoint on disk must hold before probekit hands it to transformers, and what shape it has.

Every check here runs before any weight is read, so a broken or wrong checkpoint costs
milliseconds, not a 70B load, and the error names the file and what is wrong with it:

* :func:`check_dir` -- a transformers checkpoint directory: ``config.json`` parses (else the
  file, line, column and JSON error), weights are present (``*.safetensors`` / ``*.bin``), every
  shard that ``*.index.json`` lists exists (else the shard is named), a tokenizer is present.
  Everything missing is listed at once.
* :func:`check_gguf` -- a ``.gguf`` file starts with the GGUF magic; :func:`gguf_shape` reads
  the shape from its metadata (memory-mapped header only).
* :func:`config_shape` -- layers, width, vocabulary and ``model_type`` of a config (dict or
  ``PretrainedConfig``), for the registry's identity check (``ModelSpec.mismatches``).
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import CheckpointError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# any one of these makes a tokenizer that AutoTokenizer can load
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "tokenizer.tiktoken")
GGUF_MAGIC = b"GGUF"
# GGUF's general.architecture -> transformers' model_type (where they differ)
_GGUF_MODEL_TYPE = {"gemma3": "gemma3_text"}


def read_config(path: Path) -> dict:
    """``path/config.json`` as a dict; a specific error for a missing or unparsable file."""
    cfg = Path(path) / "config.json"
    try:
        text = cfg.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no config.json, so this is not a transformers checkpoint "
                              f"directory (it needs config.json, weights and tokenizer files)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg}: cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; "
                              f"fix or replace the file") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{cfg}: expected a JSON object, found {type(data).__name__}")
    return data


def check_dir(path: Path) -> dict:
    """Validate a checkpoint directory (see the module docstring); returns its parsed config."""
    path = Path(path)
    config = read_config(path)
    problems = []
    names = {p.name for p in path.iterdir()}
    for index in INDEX_FILES:
        if index in names:
            problems += _missing_shards(path / index)
    has_weights = any(n.endswith(WEIGHT_SUFFIXES) for n in names)
    if not has_weights:
        ggufs = sorted(n for n in names if n.endswith(".gguf"))
        problems.append("no weights (model.safetensors, model-*-of-*.safetensors with "
                        "model.safetensors.index.json, or pytorch_model.bin)"
                        + (f"; for GGUF weights pass the file itself: {path / ggufs[0]}" if ggufs else ""))
    if not any(n in names for n in TOKENIZER_FILES) and not any(n.endswith(".tiktoken") for n in names):
        problems.append(f"no tokenizer (one of {', '.join(TOKENIZER_FILES)}; save it with "
                        f"tokenizer.save_pretrained(dir))")
    if problems:
        raise CheckpointError(f"checkpoint {path} is incomplete: " + "; ".join(problems))
    return config


def _missing_shards(index: Path) -> list[str]:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        shards = sorted(set(data["weight_map"].values()))
    except json.JSONDecodeError as exc:
        return [f"{index.name} is invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]
    except (KeyError, AttributeError, TypeError):
        return [f"{index.name} has no weight_map of tensor -> shard file"]
    missing = [s for s in shards if not (index.parent / s).is_file()]
    if missing:
        return [f"{index.name} lists {len(shards)} shard(s) and {len(missing)} are missing: {', '.join(missing)}"]
    return []


def check_gguf(path: Path) -> None:
    """A file named ``.gguf`` must be one: GGUF files start with the bytes ``GGUF``."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read: {exc}") from None
    if head != GGUF_MAGIC:
        raise CheckpointError(f"{path} is not a GGUF file (it starts with {head!r}, GGUF files start with "
                              f"{GGUF_MAGIC!r}); give a .gguf file or a transformers checkpoint directory")


def gguf_shape(path: Path) -> dict:
    """Like :func:`config_shape`, from a GGUF file's metadata (no tensor is read)."""
    from gguf import GGUFReader
    try:
        reader = GGUFReader(str(path))
    except Exception as exc:          # truncated or malformed header
        raise CheckpointError(f"{path}: GGUF header cannot be parsed ({type(exc).__name__}: {exc})") from None

    def value(key):
        field = reader.fields.get(key)
        if field is None:
            return None
        v = field.parts[field.data[0]]
        return bytes(v).decode() if v.dtype.kind == "u" and v.dtype.itemsize == 1 else int(v[0])

    arch = value("general.architecture")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return {"model_type": ("general.architecture", _GGUF_MODEL_TYPE.get(arch, arch)),
            "n_layers": (f"{arch}.block_count", value(f"{arch}.block_count")),
            "d_model": (f"{arch}.embedding_length", value(f"{arch}.embedding_length")),
            "vocab_size": ("tokenizer.ggml.tokens", len(tokens.data) if tokens is not None else None)}


def config_shape(config) -> dict:
    """``{field: (key, value)}`` for the fields ``model_type``, ``n_layers``, ``d_model`` and
    ``vocab_size`` of a config dict or PretrainedConfig (its text config if it has one); ``key``
    is the config's own name for the value, so an error can quote the file."""
    cfg = config if isinstance(config, dict) else config.to_dict()
    text = cfg.get("text_config") or cfg

    def first(*keys):
        for k in keys:
            if text.get(k) is not None:
                return k, text[k]
        return keys[0], None

    out = {"model_type": ("model_type", text.get("model_type") or cfg.get("model_type"))}
    out["n_layers"] = first("num_hidden_layers", "n_layer")
    out["d_model"] = first("hidden_size", "n_embd")
    out["vocab_size"] = first("vocab_size")
    return out
