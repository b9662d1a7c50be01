"""Issue 24, what round 3 did not reach (a too-long text before the model loads, absurd activations at the
first batch, streaming's temporaries on a full disk), and round 4's faults of our own design (F31-...)
against the code of the house move and this round. docs/reliability.md, round 4, lists them."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import probekit
from probekit import cli
from probekit.core.checks import ActivationRangeError, DiskFullError
from probekit.models.testing import mixed_stimuli, tiny_model
from test_reliability3 import TOY, _code, _no_model_load, _same

STIMULI = mixed_stimuli(12)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("PROBEKIT_CACHE", str(d))
    return d


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model"
    src = tiny_model("llama", n_layers=2)
    src.model.save_pretrained(path)
    src.tokenizer.save_pretrained(path)
    return path


def _toy(tmp_path: Path, edit) -> Path:
    d = tmp_path / "study"
    shutil.copytree(TOY, d, ignore=shutil.ignore_patterns("__pycache__"))
    csv = d / "colours.csv"
    csv.write_text(edit(csv.read_text()))
    return d


# ============================================================================ 1. a too-long text

def test_a_text_longer_than_the_context_is_refused_before_the_model_loads(tmp_path, ckpt, cache, monkeypatch,
                                                                          capsys):
    """Was: found at tokenisation, after the model had loaded (one line since round 3, but late)."""
    _no_model_load(monkeypatch)
    long = "A red wall " + " ".join(["and more"] * 10_000)          # 20,000 words; the tiny model's context: 256
    study = _toy(tmp_path, lambda t: t.replace("A red wall,", f"{long},", 1))
    assert cli.main(["run", "--study", str(study), "--model", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "context of 256 tokens (max_position_embeddings in model/config.json)" in err
    assert "set 'colours'" in err and "stimulus 0" in err and "90010 characters): 40010 tokens" in err and "shorten" in err


def test_the_length_check_tokenizes_only_what_might_not_fit(ckpt, monkeypatch):
    import probekit.models.checkpoint as C
    from probekit.extraction.forward import ExtractionError
    from probekit.pipeline import check_stimulus_lengths, token_bound
    calls = []
    real = C.load_tokenizer
    monkeypatch.setattr(C, "load_tokenizer", lambda kw: calls.append(kw) or real(kw))
    check_stimulus_lengths(str(ckpt), [STIMULI])                 # short texts: no tokenizer at all
    assert calls == []
    near = pd.DataFrame({"text": ["apple " * 40], "target": ["apple"]})      # 240 bytes: tokenized, 83 tokens: fits
    assert token_bound(near.text[0]) > 256
    check_stimulus_lengths(str(ckpt), [near])
    assert len(calls) == 1
    with pytest.raises(ExtractionError, match=r"longer than the stated limit of 40 tokens \(max_tokens\): stimulus 0 .* 83 tokens"):
        check_stimulus_lengths(str(ckpt), [near], max_tokens=40)
    # the bound holds for odd unicode too (NFKC expands the ligature; 4-byte emoji)
    tok = tiny_model("llama").tokenizer
    for text in ["\ufdfa" * 5, "\U0001F600" * 7 + " x", "e\u0301" * 9, "İ" * 11]:
        assert len(tok(text)["input_ids"]) <= token_bound(text)


def test_a_gguf_states_its_context_in_its_header():
    from probekit.models.checkpoint import context_length
    from probekit.models.loading import ModelUnavailableError, resolve
    try:
        _, kw = resolve("smollm2-135m")
    except ModelUnavailableError as exc:
        pytest.skip(str(exc))
    assert context_length(kw) == (8192, "llama.context_length in " + kw["gguf_file"])


# ============================================================================ 2. absurd activations

def _scaled(layer: int, factor: float = 1e30):
    import torch
    m = tiny_model("llama", n_layers=2)
    with torch.no_grad():
        m.model.model.layers[layer].self_attn.o_proj.weight.mul_(factor)
    return m


def test_o_proj_times_1e30_is_refused_at_the_first_batch(monkeypatch):
    """Was: finite (~1e28), so the whole extraction ran and the probes refused it (ProbeInputError)."""
    import probekit.extraction.forward as F
    batches = []
    real = F._forward
    monkeypatch.setattr(F, "_forward", lambda *a: batches.append(1) or real(*a))
    with pytest.raises(ActivationRangeError, match=r"at layer 1 attn_out for stimulus 0 .*more than 1e\+15.* "
                                                   r"layer 1's attention \(e.g. its o_proj\)"):
        probekit.extract(_scaled(1), STIMULI, batch_size=2, max_batch_tokens=None)
    assert len(batches) == 1                                    # the first batch, not all six
    probekit.extract(_scaled(1, 1e3), STIMULI)                  # large but plausible: accepted


def test_o_proj_times_1e30_streamed_and_in_the_cli(tmp_path, cache, capsys):
    path = tmp_path / "big"
    m = _scaled(0)
    m.model.save_pretrained(path)
    m.tokenizer.save_pretrained(path)
    from probekit.models.loading import load_model
    streamed = load_model(str(path), dtype="float32", device="cpu", stream_layers=True)
    with pytest.raises(ActivationRangeError, match="layer 0 attn_out"):
        probekit.extract(streamed, STIMULI)
    capsys.readouterr()
    assert cli.main(["run", "--model", str(path), "--experiments", "relations", "--permutations", "0",
                     "--bootstrap", "0", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err                       # (transformers' own loading bar aside)
    assert err.count("probekit: error") == 1 and "Traceback" not in err
    assert "layer 0 attn_out" in err and "re-download" in err


# ============================================================================ 3. streaming's temporaries

@pytest.fixture(scope="module")
def streamable(tmp_path_factory):
    path = tmp_path_factory.mktemp("st") / "ck"
    m = tiny_model("llama", n_layers=2, seed=3)
    m.model.save_pretrained(path)
    m.tokenizer.save_pretrained(path)
    return path


def _full_when(monkeypatch, pred):
    real = os.posix_fallocate

    def fallocate(fd, offset, length):
        if pred(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, offset, length)
    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    return real


@pytest.mark.parametrize("what", ["pooled-", "hidden-"])
def test_streaming_temporaries_on_a_full_disk_are_a_clean_error(what, streamable, tmp_path, monkeypatch):
    """Was: streaming's memory-mapped temporaries (pooled vectors of the planned sets, hidden states on disk)
    were sparse files: a full disk would kill the run with SIGBUS. Now their blocks are reserved: ENOSPC is a
    DiskFullError, nothing is left behind, and the rerun equals the ordinary pass."""
    from probekit.models.loading import load_model
    m = load_model(str(streamable), dtype="float32", device="cpu", stream_layers=True)
    m.hidden, m.hidden_dir = "disk", str(tmp_path / "tmp")
    other = mixed_stimuli(6)
    m.plan([STIMULI, other], batch_size=4, store=tmp_path / "store")
    real = _full_when(monkeypatch, lambda p: what in p)
    with pytest.raises(DiskFullError, match=r"layer streaming: the disk filled up reserving .* MB for the "
                                            r"(pooled vectors|hidden states).* PROBEKIT_STREAM_DIR"):
        probekit.extract(m, STIMULI, batch_size=4, store=tmp_path / "store")
    assert list((tmp_path / "tmp").iterdir()) == []
    monkeypatch.setattr(os, "posix_fallocate", real)
    got = probekit.extract(m, STIMULI, batch_size=4, store=tmp_path / "store")
    ref = probekit.extract(load_model(str(streamable), dtype="float32", device="cpu"), STIMULI, batch_size=4)
    for l in range(2):
        for c in ("resid_pre", "attn_out", "mlp_out"):
            np.testing.assert_allclose(got.get(l, c), ref.get(l, c), atol=1e-5, rtol=0)
