"""Layer-streamed extraction (probekit.extraction.streaming) against the ordinary hooked forward pass, and placement."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from probekit.core.errors import CheckpointError

from probekit.core.activations import COMPONENTS
from probekit.extraction.forward import extract
from probekit.models.loading import ModelUnavailableError, load_model
from probekit.models.placement import GiB, Placement, PlacementError, plan_placement
from probekit.extraction.streaming import StreamedModel, StreamingError
from probekit.models.testing import FAMILIES, tiny_config, tiny_model

STIM = pd.DataFrame({
    "text": ["An apple and a church", "A cat is to a kitten as a dog is to a puppy",
             "The weather was mild and the meeting ran late into the afternoon", "organ",
             "A dog and an apple", "The church organ was late"],
    "target": ["apple", "kitten", "meeting", "organ", "dog", "organ"],
})


def _save(family, path):
    m = tiny_model(family, n_layers=3, d_model=32, seed=1)
    m.model.save_pretrained(path)
    m.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=FAMILIES)
def family_dir(request, tmp_path_factory):
    return request.param, _save(request.param, tmp_path_factory.mktemp(f"ck-{request.param}"))


@pytest.mark.parametrize("pooling", ["target_mean", "last_token"])
def test_streamed_equals_ordinary_fp32(family_dir, pooling):
    """Oracle: the same pooled resid_pre / attn_out / mlp_out as the ordinary pass, max |diff| <= 1e-5 in fp32."""
    family, path = family_dir
    ordinary = load_model(str(path), dtype="float32", device="cpu")
    streamed = load_model(str(path), dtype="float32", device="cpu", stream_layers=True)
    assert isinstance(streamed, StreamedModel) and streamed.placement.stream_layers
    a = extract(ordinary, STIM, pooling, batch_size=4)
    b = extract(streamed, STIM, pooling, batch_size=4)
    assert a.n_layers == b.n_layers == 3
    worst = max(float(np.abs(a.get(l, c) - b.get(l, c)).max()) for l in range(3) for c in COMPONENTS)
    assert worst <= 1e-5, f"{family} {pooling}: max |streamed - ordinary| = {worst}"
    # not a trivially equal pair: the layers differ from each other
    assert np.abs(a.get(2, "resid_pre") - a.get(0, "resid_pre")).max() > 1e-3
    # every weight read once: blocks + what lies outside them, never the LM head
    n_block = sum(p.numel() for p in ordinary.model.base_model.layers.parameters()) \
        if hasattr(ordinary.model.base_model, "layers") else sum(p.numel() for p in ordinary.model.transformer.h.parameters())
    assert streamed.bytes_read >= 4 * n_block
    assert streamed.bytes_read < 4 * sum(p.numel() for p in ordinary.model.parameters()) * 1.01


def test_streamed_disk_hidden_states_and_store(tmp_path):
    """Hidden states on disk give the same vectors; the store entry is complete and the temp files are gone."""
    path = _save("llama", tmp_path / "ck")
    ordinary = load_model(str(path), dtype="float32", device="cpu")
    streamed = load_model(str(path), dtype="float32", device="cpu", stream_layers=True)
    streamed.hidden, streamed.hidden_dir = "disk", str(tmp_path / "hid")
    a = extract(ordinary, STIM, batch_size=2)
    b = extract(streamed, STIM, batch_size=2, store=tmp_path / "store")
    assert streamed.timings["hidden_mode"] == "disk"
    for l in range(3):
        for c in COMPONENTS:
            np.testing.assert_allclose(a.get(l, c), b.get(l, c), atol=1e-5, rtol=0)
    assert list((tmp_path / "hid").iterdir()) == []
    assert b.meta["store"]
    assert (tmp_path / "store").exists()


def test_missing_shard_is_named_and_store_untouched(tmp_path):
    path = _save("llama", tmp_path / "ck")
    (path / "model.safetensors").rename(path / "model-00001-of-00002.safetensors")
    from safetensors import safe_open
    with safe_open(str(path / "model-00001-of-00002.safetensors"), "pt") as f:
        names = list(f.keys())
    wmap = {k: ("model-00001-of-00002.safetensors" if "layers.2." not in k else "model-00002-of-00002.safetensors")
            for k in names}
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    with pytest.raises((StreamingError, CheckpointError), match=r"missing.*model-00002-of-00002\.safetensors|model-00002-of-00002\.safetensors.*missing"):
        load_model(str(path), dtype="float32", device="cpu", stream_layers=True)


def test_tensor_missing_from_every_shard_refused_before_the_store(tmp_path):
    from safetensors.torch import load_file, save_file
    path = _save("llama", tmp_path / "ck")
    sd = load_file(str(path / "model.safetensors"))
    sd.pop("model.layers.1.mlp.up_proj.weight")
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    m = load_model(str(path), dtype="float32", device="cpu", stream_layers=True)
    with pytest.raises(StreamingError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        extract(m, STIM, store=tmp_path / "store")
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.npy"))


def test_checkpoint_without_weights_or_tokenizer(tmp_path):
    path = _save("llama", tmp_path / "ck")
    (path / "model.safetensors").rename(tmp_path / "away.safetensors")
    with pytest.raises((ModelUnavailableError, CheckpointError), match="has no weights|no weights"):
        load_model(str(path), dtype="auto", device="auto")
    with pytest.raises((ModelUnavailableError, CheckpointError), match="has no weights|no weights"):
        load_model(str(path), dtype="float32", device="cpu", stream_layers=True)
    (path / "pytorch_model.bin").write_bytes(b"\0" * 16)      # not empty: the preflight refuses a 0-byte file
    with pytest.raises(StreamingError, match="no \\*.safetensors weights.*pytorch_model.bin"):
        load_model(str(path), dtype="float32", device="cpu", stream_layers=True)
    (path / "pytorch_model.bin").unlink()
    (tmp_path / "away.safetensors").rename(path / "model.safetensors")
    for f in path.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            f.unlink()
    with pytest.raises((ModelUnavailableError, CheckpointError), match="has no tokenizer|no tokenizer"):
        load_model(str(path), dtype="float32", device="cpu", stream_layers=True)
    with pytest.raises((ModelUnavailableError, CheckpointError), match="has no tokenizer|no tokenizer"):
        load_model(str(path), dtype="auto", device="auto")


def test_not_enough_disk_for_hidden_states(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple
    path = _save("llama", tmp_path / "ck")
    m = load_model(str(path), dtype="float32", device="cpu", stream_layers=True)
    m.hidden, m.hidden_dir = "disk", str(tmp_path / "hid")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10, 10, 100))
    with pytest.raises(StreamingError, match=r"not enough disk for the streamed hidden states: .* GiB needed in"):
        extract(m, STIM, store=tmp_path / "store")
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.npy"))


# ----------------------------------------------------------------------------- placement

def test_placement_rule_on_cpu():
    cfg = tiny_config("llama")
    p = plan_placement(cfg, memory_bytes=64 * GiB)
    assert p == Placement("cpu", "float32", False, p.reason) and "no GPU visible" in p.reason
    from probekit.models.llama3 import llama_config
    big = llama_config("llama-3.2-3b")                     # 12.0 GiB fp32, 6.0 GiB bf16
    p = plan_placement(big, memory_bytes=10 * GiB)
    assert (p.device, p.dtype, p.stream_layers) == ("cpu", "bfloat16", False)
    assert "do not fit" in p.reason
    p = plan_placement(big, memory_bytes=4 * GiB)
    assert (p.dtype, p.stream_layers) == ("bfloat16", True) and "layer-streamed" in p.reason
    p = plan_placement(big, dtype="float32", stream_layers=False, memory_bytes=4 * GiB)
    assert (p.dtype, p.stream_layers) == ("float32", False) and "may not fit" in p.reason
    p = plan_placement(cfg, dtype="bf16", stream_layers=True, memory_bytes=64 * GiB)
    assert (p.dtype, p.stream_layers) == ("bfloat16", True)


def test_placement_refuses_what_cannot_run(monkeypatch):
    import torch
    cfg = tiny_config("llama")
    if not torch.cuda.is_available():
        with pytest.raises(PlacementError, match="no CUDA GPU"):
            plan_placement(cfg, device="cuda")
    with pytest.raises(PlacementError, match="unknown dtype 'int8'"):
        plan_placement(cfg, dtype="int8")
    with pytest.raises(PlacementError, match="unknown device"):
        plan_placement(cfg, device="tpu")
    # a GPU without bf16 (simulated): auto picks float16, an explicit bfloat16 is refused by name
    import probekit.models.placement as P
    monkeypatch.setattr(P, "cuda_count", lambda: 1)
    monkeypatch.setattr(P, "available_memory", lambda dev: 16 * GiB)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    with pytest.raises(PlacementError, match="bfloat16 cannot run on cuda .*V100"):
        plan_placement(cfg, dtype="bfloat16")


def test_streamed_bf16_is_float32_and_equals_ordinary_bf16(tmp_path):
    """Pooled vectors are stored as float32 whatever the model dtype; bf16 streamed runs the same ops as bf16
    in memory (same batches, same kernels), so they agree to bf16 rounding of the pooled sum."""
    path = _save("qwen3", tmp_path / "ck")
    a = extract(load_model(str(path), dtype="bfloat16", device="cpu"), STIM, batch_size=3)
    m = load_model(str(path), dtype="bfloat16", device="cpu", stream_layers=True)
    b = extract(m, STIM, batch_size=3)
    assert m.dtype == "bfloat16" and b.get(1, "mlp_out").dtype == np.float32
    for l in range(3):
        for c in COMPONENTS:
            scale = np.abs(a.get(l, c)).max()
            assert np.abs(a.get(l, c) - b.get(l, c)).max() <= 1e-2 * scale, (l, c)


def test_fp16_overflow_names_layer_and_component(tmp_path):
    from safetensors.torch import load_file, save_file

    from probekit.extraction.forward import ExtractionError
    path = _save("llama", tmp_path / "ck")
    sd = load_file(str(path / "model.safetensors"))
    sd["model.layers.1.mlp.down_proj.weight"] *= 1e7          # fine in fp32, inf in fp16
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    for stream in (False, True):
        m = load_model(str(path), dtype="float16", device="cpu", stream_layers=stream)
        with pytest.raises(ExtractionError, match=r"non-finite activations .* at layer 1 mlp_out .*stimulus 0"):
            extract(m, STIM.iloc[:2])


def test_real_smollm2_streamed_equals_ordinary(smollm2):
    """The real embedded SmolLM2-135M (30 layers, GQA, tied embeddings): streamed = ordinary in fp32."""
    import probekit.stimuli.sets as S
    stim = S.load("items").iloc[:12]
    streamed = load_model("smollm2-135m", dtype="float32", device="cpu", stream_layers=True)
    # the same checkpoint; the weights-in-memory part differs (a streamed model holds none), so the two
    # modes keep separate store entries
    assert streamed.origin == smollm2.origin
    a = extract(smollm2, stim, batch_size=5)
    b = extract(streamed, stim, batch_size=5)
    for l in (0, 7, 15, 29):
        for c in COMPONENTS:
            x, y = a.get(l, c), b.get(l, c)
            assert np.abs(x - y).max() <= 1e-5 * max(1.0, float(np.abs(x).max())), (l, c)


def test_planned_sets_stream_in_one_pass_reading_each_weight_once(tmp_path):
    """replicate() plans every experiment: the first extract streams all of them (weights read once), the
    others copy their vectors; a set already in the store is not recomputed. Same vectors as the ordinary pass."""
    path = _save("gemma3_text", tmp_path / "ck")
    ordinary = load_model(str(path), dtype="float32", device="cpu")
    m = load_model(str(path), dtype="float32", device="cpu", stream_layers=True)
    m.hidden_dir = str(tmp_path / "tmp")
    s1 = STIM.copy()
    s2 = pd.DataFrame({"text": ["A kitten and a puppy", "The organ was loud", "An apple"],
                       "target": ["puppy", "organ", "apple"]})
    s2.attrs["pooling"] = "last_token"
    s3 = pd.DataFrame({"text": ["A dog", "A cat"], "target": ["dog", "cat"]})
    store = tmp_path / "store"
    extract(m, s3, store=store)                          # already complete: must not be streamed again
    m.plan([s1, s2, s3], batch_size=4, store=store)
    read0 = m.bytes_read
    a = extract(m, s1, batch_size=4, store=store)
    one_pass = m.bytes_read - read0
    b = extract(m, s2, batch_size=4, store=store)
    assert m.bytes_read - read0 == one_pass              # s2 came from the first pass: nothing read again
    assert m.precomputed == {}                           # s3 was skipped, s2 consumed
    assert list((tmp_path / "tmp").iterdir()) == []      # the temporary pooled vectors are gone
    for got, frame, pooling in ((a, s1, "target_mean"), (b, s2, "last_token")):
        ref = extract(ordinary, frame, pooling, batch_size=4)
        for l in range(3):
            for c in COMPONENTS:
                np.testing.assert_allclose(got.get(l, c), ref.get(l, c), atol=1e-5, rtol=0)


def test_a_planned_set_never_extracted_leaves_no_temporary(tmp_path):
    """Two sets planned, one extracted (the pass computes both), the session closed: no pooled-* is left,
    and the model still extracts on its own afterwards."""
    path = _save("llama", tmp_path / "ck")
    m = load_model(str(path), dtype="float32", device="cpu", stream_layers=True)
    m.hidden_dir = str(tmp_path / "tmp")
    s2 = pd.DataFrame({"text": ["A kitten and a puppy", "The organ was loud"], "target": ["puppy", "organ"]})
    with m.planned([STIM, s2], batch_size=4):
        extract(m, STIM, batch_size=4)
        assert len(list((tmp_path / "tmp").glob("pooled-*"))) == 1      # s2's vectors, waiting
    assert list((tmp_path / "tmp").glob("pooled-*")) == [] and m.precomputed == {} and m.pending == []
    m.plan([STIM, s2], batch_size=4)                                    # the same through close()
    extract(m, s2, batch_size=4)
    m.close()
    assert list((tmp_path / "tmp").glob("pooled-*")) == []
    assert extract(m, s2, batch_size=4).get(0, "resid_pre").shape == (2, 32)


def test_auto_placement_streams_a_model_that_does_not_fit(tmp_path, monkeypatch):
    """load_model(dtype="auto", device="auto"): with too little memory (simulated) it picks bf16 and streaming,
    says why, and the vectors still match the ordinary pass of the same dtype."""
    import probekit.models.placement as P
    path = _save("mistral", tmp_path / "ck")
    monkeypatch.setattr(P, "available_memory", lambda device: GiB // 2)
    m = load_model(str(path), dtype="auto", device="auto", stream_layers="auto")
    assert isinstance(m, StreamedModel) and m.dtype == "bfloat16"
    assert "do not fit" in m.placement.reason and "layer-streamed" in m.placement.reason
    monkeypatch.setattr(P, "available_memory", lambda device: 64 * GiB)
    o = load_model(str(path), dtype="auto", device="auto")
    assert not isinstance(o, StreamedModel) and o.dtype == "float32" and o.placement.device == "cpu"
    ref = extract(load_model(str(path), dtype="bfloat16", device="cpu"), STIM)
    got = extract(m, STIM)
    np.testing.assert_allclose(got.get(2, "resid_pre"), ref.get(2, "resid_pre"),
                               atol=1e-2 * float(np.abs(ref.get(2, "resid_pre")).max()), rtol=0)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_release_layer_drops_finished_pooled_vectors_from_memory(tmp_path):
    """A streamed pass writes every planned set's pooled vectors into memory-mapped files; a finished layer's
    pages must leave the process (the 3B run's peak RSS was 5.9 GiB with all of them resident), and the data
    must still be in the files."""
    from probekit.core.activations import COMPONENTS
    from probekit.extraction.streaming import release_layer
    n, d = 4096, 1024                                # 16 MiB per component, 48 MiB per layer
    arrays = {(0, c): np.lib.format.open_memmap(tmp_path / f"{c}.npy", mode="w+", dtype=np.float32, shape=(n, d))
              for c in COMPONENTS}
    plain = {(0, c): np.ones((4, 4), np.float32) for c in COMPONENTS}
    for i, a in enumerate(arrays.values()):
        a[:] = i + 1.0
    before = _rss_bytes()
    release_layer(arrays, 0)
    release_layer(plain, 0)                          # plain arrays: nothing to do, nothing broken
    dropped = before - _rss_bytes()
    assert dropped > 0.8 * 3 * n * d * 4, f"only {dropped / 2**20:.1f} MiB left the process"
    for i, c in enumerate(COMPONENTS):
        assert float(arrays[(0, c)][123, 45]) == i + 1.0
        assert float(np.load(tmp_path / f"{c}.npy", mmap_mode="r")[n - 1, d - 1]) == i + 1.0



def test_replicate_leaves_no_planned_temporary_even_when_it_fails(tmp_path, monkeypatch):
    """replicate() plans every set of a streamed model inside a session: a run that dies after the first
    set (the second planned set computed, never extracted) still leaves no pooled-* behind."""
    import dataclasses
    import shutil
    from pathlib import Path

    from probekit import pipeline
    from probekit.stimuli.experiments import Experiment
    from probekit.studies import load_study
    toy_dir = Path(__file__).resolve().parent / "toystudy"
    toy = load_study(str(toy_dir))
    shutil.copy(toy_dir / "colours.csv", tmp_path / "colours2.csv")
    meta = json.loads((toy_dir / "colours.json").read_text())
    (tmp_path / "colours2.json").write_text(json.dumps(dict(meta, name="colours2", pooling="last_token")))
    exps = dict(toy.experiments, colours2=Experiment("colours2", str(tmp_path / "colours2.csv"), "last token",
                                                     paper="toy", primary=("warm",)))
    study = dataclasses.replace(toy, experiments=exps)
    m = load_model(str(_save("llama", tmp_path / "ck")), dtype="float32", device="cpu", stream_layers=True)
    m.hidden_dir = str(tmp_path / "tmp")

    def dies(acts, exp, *a, **k):
        assert len(list((tmp_path / "tmp").glob("pooled-*"))) == 1      # colours2 computed, waiting
        raise RuntimeError("died after the first set")
    monkeypatch.setattr(pipeline, "probe_experiment", dies)
    with pytest.raises(RuntimeError, match="died after the first set"):
        pipeline.replicate(m, ["colours", "colours2"], study=study, store=False, log=None)
    assert list((tmp_path / "tmp").glob("pooled-*")) == []
