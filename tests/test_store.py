"""The on-disk activation store: reuse, keys, resume after a kill, corruption, mismatch."""
from __future__ import annotations

import json

import numpy as np
import pytest

import probekit
import probekit.extraction.forward as ex
from probekit.core.activations import COMPONENTS
from probekit.extraction.store import ActivationStore, StoreMismatchError
from probekit.models.testing import mixed_stimuli, tiny_model

STIMULI = mixed_stimuli(40)


@pytest.fixture
def model():
    return tiny_model("llama", n_layers=2)


def _same(a, b):
    for l in a.layers:
        for c in COMPONENTS:
            np.testing.assert_array_equal(np.asarray(a.get(l, c)), np.asarray(b.get(l, c)))


def _count_forwards(monkeypatch):
    calls = {"n": 0}
    real = ex._forward

    def counting(*args, **kw):
        calls["n"] += 1
        return real(*args, **kw)
    monkeypatch.setattr(ex, "_forward", counting)
    return calls


def test_store_matches_memory_and_is_reused(model, tmp_path, monkeypatch):
    mem = probekit.extract(model, STIMULI, batch_size=4)
    stored = probekit.extract(model, STIMULI, batch_size=4, store=tmp_path)
    _same(mem, stored)
    assert isinstance(stored.get(0, "attn_out"), np.memmap)          # read lazily, per matrix
    calls = _count_forwards(monkeypatch)
    again = probekit.extract(model, STIMULI, batch_size=4, store=tmp_path)
    assert calls["n"] == 0
    _same(mem, again)
    entry = next(p for p in tmp_path.iterdir() if p.is_dir())
    data_bytes = sum(np.load(p, mmap_mode="r").nbytes for p in entry.glob("L*.npy"))
    assert data_bytes == len(STIMULI) * model.n_layers * 3 * model.d_model * 4
    assert list(again.stimuli["n_target_tokens"]) == list(mem.stimuli["n_target_tokens"])


def test_keys_separate_models_stimuli_and_pooling(model, tmp_path):
    probekit.extract(model, STIMULI, store=tmp_path)
    probekit.extract(model, STIMULI, pooling="last_token", store=tmp_path)
    probekit.extract(model, STIMULI.iloc[::-1].reset_index(drop=True), store=tmp_path)
    probekit.extract(tiny_model("llama", n_layers=2, seed=1), STIMULI, store=tmp_path)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 4


def test_killed_run_resumes_where_it_stopped(model, tmp_path, monkeypatch):
    clean = probekit.extract(model, STIMULI, batch_size=2)          # 20 batches -> 3 chunks of <= 8
    real = ex._forward
    calls = {"n": 0}

    def dying(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 12:                     # in the middle of the second chunk
            raise KeyboardInterrupt
        return real(*args, **kw)
    monkeypatch.setattr(ex, "_forward", dying)
    with pytest.raises(KeyboardInterrupt):
        probekit.extract(model, STIMULI, batch_size=2, store=tmp_path)
    entry = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert not (entry / "complete.json").exists()
    assert json.loads((entry / "progress.json").read_text())["done"] == [0]

    monkeypatch.setattr(ex, "_forward", real)
    calls = _count_forwards(monkeypatch)
    resumed = probekit.extract(model, STIMULI, batch_size=2, store=tmp_path)
    assert calls["n"] == 20 - 8                  # only the chunks not done
    _same(clean, resumed)


def test_corrupt_entry_is_detected_and_rebuilt(model, tmp_path, monkeypatch):
    probekit.extract(model, STIMULI, store=tmp_path)
    entry = next(p for p in tmp_path.iterdir() if p.is_dir())
    victim = entry / "L001_mlp_out.npy"
    raw = bytearray(victim.read_bytes())
    raw[-7] ^= 0xFF
    victim.write_bytes(bytes(raw))
    calls = _count_forwards(monkeypatch)
    with pytest.warns(UserWarning, match="checksum mismatch"):
        again = probekit.extract(model, STIMULI, store=tmp_path)
    assert calls["n"] > 0
    mem = probekit.extract(model, STIMULI)
    _same(mem, again)


def test_truncated_file_is_detected(model, tmp_path):
    probekit.extract(model, STIMULI, store=tmp_path)
    entry = next(p for p in tmp_path.iterdir() if p.is_dir())
    victim = entry / "L000_resid_pre.npy"
    victim.write_bytes(victim.read_bytes()[:-100])
    with pytest.warns(UserWarning, match="rebuilding"):
        probekit.extract(model, STIMULI, store=tmp_path)


def test_entry_of_another_model_is_never_reused(model, tmp_path):
    """A directory copied over another key (same name, other identity) is detected and rebuilt."""
    other = tiny_model("llama", n_layers=2, seed=7)
    probekit.extract(model, STIMULI, store=tmp_path)
    probekit.extract(other, STIMULI, store=tmp_path)
    entries = {json.loads((p / "manifest.json").read_text())["model_fingerprint"]: p
               for p in tmp_path.iterdir() if p.is_dir()}
    src, dst = entries[model.fingerprint], entries[other.fingerprint]
    for f in src.iterdir():                      # a careless copy of one entry over the other
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    with pytest.warns(UserWarning, match="another identity"):
        again = probekit.extract(other, STIMULI, store=tmp_path)
    _same(probekit.extract(other, STIMULI), again)


def test_manifest_mismatch_raises_when_verified_directly(model, tmp_path):
    probekit.extract(model, STIMULI, store=tmp_path)
    store = ActivationStore(tmp_path)
    identity = {"model_fingerprint": "something-else"}
    entry = store.entry(identity)
    real = next(p for p in tmp_path.iterdir() if p.is_dir())
    entry.path = real
    with pytest.raises(StoreMismatchError, match="model_fingerprint"):
        entry.verify()


def test_one_manifest_scheme_for_every_directory_checksum(tmp_path):
    """core.hashing.dir_sha256 / sha256_problem are the one scheme behind the store's complete.json, a
    converted checkpoint's manifest and saved probe results' checksums.json: the first bad file by name,
    missing (actual None) or changed (its actual hash), else None."""
    from probekit.core.hashing import dir_sha256, file_sha256, sha256_problem
    for n in ("b.npy", "a.npy", "c.json"):
        (tmp_path / n).write_bytes(n.encode())
    (tmp_path / "sub").mkdir()
    sums = dir_sha256(tmp_path, skip={"c.json"})
    assert list(sums) == ["a.npy", "b.npy"] and sums["a.npy"] == file_sha256(tmp_path / "a.npy")
    assert list(dir_sha256(tmp_path, "*.npy")) == ["a.npy", "b.npy"]
    assert sha256_problem(tmp_path, sums) is None
    (tmp_path / "b.npy").write_bytes(b"edited")
    assert sha256_problem(tmp_path, sums) == ("b.npy", file_sha256(tmp_path / "b.npy"), sums["b.npy"])
    (tmp_path / "a.npy").unlink()
    assert sha256_problem(tmp_path, sums) == ("a.npy", None, sums["a.npy"])
