"""What a checkpoint on disk must hold before probekit hands it to transformers, and what shape it has.

Every check here runs before any weight is read, so a broken or wrong checkpoint costs
milliseconds, not a 70B load, and the error names the file and what is wrong with it:

* :func:`check_dir` -- a transformers checkpoint directory: ``config.json`` parses (else the
  file, line, column and JSON error) and names a ``model_type``, weights are present
  (``*.safetensors`` / ``*.bin``), every shard that ``*.index.json`` lists exists (else the shard
  is named), every safetensors shard has a readable header and the size that header describes
  (a truncated or zero-byte shard is named before any layer is computed), a tokenizer is present.
  Everything missing is listed at once.
* :func:`dir_fingerprint` -- the identity of a checkpoint directory: ``config.json``, the
  tokenizer files and every other file the model loads (chat template, special-tokens map,
  generation settings), and a sampled digest of every weight file.
* :func:`check_gguf` -- a ``.gguf`` file starts with the GGUF magic, its header parses and its
  tensors fit in the file; :func:`gguf_shape` reads the shape from its metadata (memory-mapped
  header only).
* :func:`fix_pad_token` -- a loaded tokenizer pads with its pad token, else its eos token; one
  with neither is refused before the weights are read.
* :func:`config_shape` -- layers, width, vocabulary and ``model_type`` of a config (dict or
  ``PretrainedConfig``), for the registry's identity check (``ModelSpec.mismatches``).
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from probekit.core.errors import CheckpointError

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


#: what is missing when :func:`has_tokenizer` is false, and how to supply it
NO_TOKENIZER = (f"no tokenizer (one of {', '.join(TOKENIZER_FILES)}; save it with tokenizer.save_pretrained(dir) "
                f"or copy the tokenizer files next to config.json)")


def has_tokenizer(names) -> bool:
    """Whether a checkpoint directory holds a tokenizer AutoTokenizer can load: ``names`` are its file names
    (or the directory itself). The one test of it: :func:`check_dir`, the placement's and the streamed
    loader's checks all call it."""
    if isinstance(names, (str, Path)):
        names = {p.name for p in Path(names).iterdir()}
    return any(n in names for n in TOKENIZER_FILES) or any(n.endswith(".tiktoken") for n in names)


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
    if not has_tokenizer(names):
        problems.append(NO_TOKENIZER)
    if not config.get("model_type") and not (config.get("text_config") or {}).get("model_type"):
        problems.append('config.json has no "model_type" (transformers needs it to choose the architecture, '
                        'e.g. "model_type": "llama"; re-save the config with config.save_pretrained(dir))')
    for n in sorted(names):
        if n.endswith(".safetensors"):
            problems += _bad_safetensors(path / n)
        elif n.endswith(WEIGHT_SUFFIXES) and (path / n).is_file() and (path / n).stat().st_size == 0:
            problems.append(f"{n} is empty (0 bytes): re-download or re-save the checkpoint")
    if problems:
        raise CheckpointError(f"checkpoint {path} is incomplete: " + "; ".join(problems))
    return config


def _bad_safetensors(shard: Path) -> list[str]:
    """A safetensors file must hold an 8-byte header length, that JSON header, and exactly the bytes
    the header's offsets describe (a truncated download keeps its name but not its size)."""
    redo = "re-download or re-save the checkpoint"
    try:
        size = shard.stat().st_size
        with open(shard, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return [f"{shard.name} is {size} bytes, too short for a safetensors header (truncated); {redo}"]
            (n,) = struct.unpack("<Q", head)
            if 8 + n > size:
                return [f"{shard.name} is {size} bytes but its header alone needs {8 + n} (truncated); {redo}"]
            header = json.loads(f.read(n))
    except FileNotFoundError:
        return []                         # a dangling link: reported as a missing shard by the index check
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return [f"{shard.name}: unreadable safetensors header ({type(exc).__name__}: {exc}); {redo}"]
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return [f"{shard.name}: its safetensors header has no valid data_offsets; {redo}"]
    if 8 + n + end != size:
        return [f"{shard.name} is {size} bytes, its header describes {8 + n + end} "
                f"({'truncated' if size < 8 + n + end else 'trailing bytes'}); {redo}"]
    return []


# files of a checkpoint directory that do not change what the model computes
_NOT_LOADED = ("readme", "license", "notice", "use_policy", "model_card")
_FULL_HASH_LIMIT = 64 << 20


def dir_fingerprint(path: Path) -> str:
    """config.json, the tokenizer files and every other file the model loads (hashed in full), and a
    sampled digest of every weight file: changes whenever the checkpoint does, a tokenizer edit included.

    Left out: hidden files, folders and documentation (README, LICENSE, ``*.md``)."""
    path = Path(path)
    h = hashlib.sha256()
    for p in sorted(path.iterdir()):
        low = p.name.lower()
        if p.name.startswith(".") or not p.is_file() or low.endswith(".md") or low.startswith(_NOT_LOADED):
            continue
        if p.suffix in {".safetensors", ".bin", ".gguf", ".pt", ".pth"} or p.stat().st_size > _FULL_HASH_LIMIT:
            h.update(f"{p.name}:{sampled_digest(p)}".encode())
        else:
            h.update(f"{p.name}:{hashlib.sha256(p.read_bytes()).hexdigest()};".encode())
    return h.hexdigest()


def sampled_digest(path: Path, n_samples: int = 16, block: int = 1 << 16) -> str:
    """SHA256 of a file's size and 16 evenly spaced 64 KiB blocks: cheap for a 140 GB checkpoint,
    and different for retrained weights of the same shape (which keep every file size)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for k in range(n_samples):
            f.seek(max(0, (size - block) * k // max(1, n_samples - 1)))
            h.update(f.read(block))
    return h.hexdigest()


def fix_pad_token(tok, where) -> None:
    """Batches are padded with the tokenizer's pad token, else its eos token; refuse one with neither
    (it would fail deep inside extraction as ``full(): ... NoneType``)."""
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise CheckpointError(f"{where}: the tokenizer has neither a pad token nor an eos token, and probekit "
                                  f"pads batches with one of them; set \"pad_token\" (or \"eos_token\") in its "
                                  f"tokenizer_config.json")
        tok.pad_token = tok.eos_token


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
    _check_gguf_size(path)       # the header parses and every tensor lies inside the file


_GGUF_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}   # value type -> bytes
_GGUF_INT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 10: "Q", 11: "q"}        # integer types -> struct


def _gguf_data_end(path: Path) -> tuple[int, int]:
    """(bytes the tensors need, tensor count) of a GGUF file, from its header alone: the key/value
    metadata is skipped, the tensor table read (a full GGUFReader takes seconds on a 100 MB file)."""
    need, n_tensors, _ = _gguf_header(path)
    return need, n_tensors


def gguf_values(path: Path, keys) -> dict:
    """The integer and string metadata values of ``keys`` in a GGUF file's header (those it has), read as
    :func:`_gguf_data_end` reads the header (no GGUFReader, no tensor)."""
    return _gguf_header(path, frozenset(keys))[2]


def _gguf_header(path: Path, want: frozenset = frozenset()) -> tuple[int, int, dict]:
    import numpy as np
    from gguf.constants import GGML_QUANT_SIZES
    import mmap
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        pos = 4

        def take(fmt):
            nonlocal pos
            v = struct.unpack_from("<" + fmt, buf, pos)
            pos += struct.calcsize(fmt)
            return v[0]

        def skip_value(t):
            nonlocal pos
            if t in _GGUF_SCALAR:
                pos += _GGUF_SCALAR[t]
            elif t == 8:
                pos += 8 + take("Q")
            elif t == 9:
                it, n = take("I"), take("Q")
                if it in _GGUF_SCALAR:
                    pos += n * _GGUF_SCALAR[it]
                else:
                    for _ in range(n):
                        skip_value(it)
            else:
                raise ValueError(f"unknown metadata value type {t}")

        version = take("I")
        if version < 2:
            raise ValueError(f"GGUF version {version} (probekit reads versions 2 and 3)")
        n_tensors, n_kv = take("Q"), take("Q")
        alignment = 32
        values: dict = {}
        for _ in range(n_kv):
            key = bytes(buf[pos + 8:pos + 8 + take("Q")]).decode("utf-8", "replace")
            pos += len(key.encode())
            t = take("I")
            if key == "general.alignment" and t in (4, 5):
                alignment = struct.unpack_from("<I", buf, pos)[0]
            if key in want and t in _GGUF_INT:
                values[key] = struct.unpack_from("<" + _GGUF_INT[t], buf, pos)[0]
            elif key in want and t == 8:
                n = struct.unpack_from("<Q", buf, pos)[0]
                values[key] = bytes(buf[pos + 8:pos + 8 + n]).decode("utf-8", "replace")
            skip_value(t)
        end = 0
        for _ in range(n_tensors):
            pos += 8 + take("Q")
            dims = [take("Q") for _ in range(take("I"))]
            ttype, offset = take("I"), take("Q")
            block, size = GGML_QUANT_SIZES[ttype]
            end = max(end, offset + int(np.prod(dims, dtype=np.int64)) // block * size)
        start = -(-pos // alignment) * alignment
        return start + end, n_tensors, values


def _gguf_reader(path: Path):
    """A GGUFReader of ``path`` (metadata only); a malformed file is a CheckpointError naming it."""
    from gguf import GGUFReader
    _check_gguf_size(path)
    try:
        return GGUFReader(str(path))
    except Exception as exc:          # malformed header
        raise CheckpointError(f"{path}: GGUF header cannot be parsed ({type(exc).__name__}: {exc}); "
                              f"the file is damaged; download it again") from None


def _check_gguf_size(path: Path) -> None:
    redo = "the file is truncated or damaged; download it again"
    try:
        need, n_tensors = _gguf_data_end(path)
    except (struct.error, ValueError, KeyError, OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: GGUF header cannot be parsed ({type(exc).__name__}: {exc}); {redo}") from None
    size = Path(path).stat().st_size
    if n_tensors == 0:
        raise CheckpointError(f"{path}: a GGUF header with no tensors (no weights); {redo}")
    if need > size:
        raise CheckpointError(f"{path} is {size} bytes but its header describes {need} bytes of tensors; {redo}")


def gguf_shape(path: Path) -> dict:
    """Like :func:`config_shape`, from a GGUF file's metadata (no tensor is read)."""
    reader = _gguf_reader(path)

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


#: config keys that state a model's context (positions it has embeddings or rotary tables for), by family
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


def context_length(kw: dict) -> tuple[int | None, str]:
    """``(tokens, where it is stated)`` of the model :func:`probekit.models.loading.resolve` found (``kw``),
    from ``config.json`` (its ``text_config`` first) or the GGUF header's ``<arch>.context_length`` -- the
    value transformers gives ``max_position_embeddings`` -- without loading the model; ``(None, "")`` when
    neither states one."""
    if "gguf_file" in kw:
        path = Path(kw["path"]) / kw["gguf_file"]
        arch = gguf_values(path, ["general.architecture"]).get("general.architecture")
        key = f"{arch}.context_length"
        value = gguf_values(path, [key]).get(key) if arch else None
        return (int(value), f"{key} in {path.name}") if value else (None, "")
    cfg = read_config(Path(kw["path"]))
    for part in (cfg.get("text_config") or {}, cfg):
        for key in CONTEXT_KEYS:
            if isinstance(part.get(key), int) and part[key] > 0:
                return part[key], f"{key} in {Path(kw['path']).name}/config.json"
    return None, ""


def load_tokenizer(kw: dict, where: str | None = None):
    """The tokenizer of the model ``kw`` describes, without its weights (a checkpoint's tokenizer files, or
    the one a GGUF file embeds), its padding checked (:func:`fix_pad_token`). The one way the loaders (in
    memory, streamed) and the length check read a tokenizer: files it cannot read are a :class:`CheckpointError`
    naming ``where`` (default: the checkpoint folder), not the parser's exception."""
    from transformers import AutoTokenizer
    where = where or f"checkpoint {kw['path']}"
    try:
        tok = AutoTokenizer.from_pretrained(kw["path"], **({"gguf_file": kw["gguf_file"]} if "gguf_file" in kw else {}))
    except Exception as exc:             # JSONDecodeError, OSError, ValueError, KeyError, ... from the tokenizer files
        raise CheckpointError(f"{where}: its tokenizer cannot be loaded ({type(exc).__name__}: {str(exc)[:200]}); "
                              f"restore its tokenizer files (tokenizer.json, tokenizer_config.json, ...)") from None
    fix_pad_token(tok, where)
    return tok
