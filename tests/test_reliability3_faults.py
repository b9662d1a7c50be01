"""Round 3, faults of our own design against the code this round changed (results folders and their lock,
the audit's walk, checkpoint checks and identity, the store's disk-full path, the CLI's one error path,
expected tables, calibrate/build-llama3 arguments). Each ends in a specific error before the work or in a
correct result; docs/reliability.md lists them (F1-F30)."""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

import probekit
from probekit import cli
from probekit.core.checks import DiskFullError
from probekit.core.errors import CheckpointError
from probekit.models.testing import mixed_stimuli, tiny_model
from test_reliability3 import _code, _copy, _no_model_load, _same, _save_run

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


# ----------------------------------------------------------------------------- arguments

def test_f1_an_out_name_too_long_is_refused_before_the_work(ckpt, tmp_path, cache, monkeypatch, capsys):
    _no_model_load(monkeypatch)
    assert _code(["run", "--model", str(ckpt), "--out", str(tmp_path / ("o" * 300))]) == 2
    assert "more than the 255" in capsys.readouterr().err


def test_f2_an_unknown_experiment_among_known_ones(capsys):
    assert _code(["run", "--experiments", "items,nosuch"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment(s) nosuch" in err and "items" in err


def test_f3_f4_calibrate_depths_with_spaces_are_read_and_duplicates_refused():
    import argparse
    assert cli._depths(" 18 , 28 ") == [18, 28]
    with pytest.raises(argparse.ArgumentTypeError, match="gives a depth twice"):
        cli._depths("18,18")


def test_f5_calibrate_claims_by_full_id_or_short_name():
    from probekit.studies import load_study
    study = load_study("bogdan2025")
    cli._check_claims(["bogdan2025.item_peak_early", "relations_deeper"], study)    # no SystemExit
    cli._check_claims(None, study)


def test_f6_calibrate_out_name_too_long(tmp_path, capsys):
    assert _code(["calibrate", "--out", str(tmp_path / ("c" * 300)), "--draws", "20", "--layers", "8"]) == 2
    assert "more than the 255" in capsys.readouterr().err


def test_f27_build_llama3_layers_not_a_number(capsys):
    assert _code(["build-llama3", "--layers", "abc"]) == 2
    assert "--layers must be an integer >= 1" in capsys.readouterr().err


def test_f30_bootstrap_zero_still_means_none():
    args = cli.build_parser().parse_args(["run", "--bootstrap", "0"])
    assert args.bootstrap == 0


def test_f23_debug_anywhere_on_the_line_and_from_the_environment(tmp_path, monkeypatch):
    study = tmp_path / "s"
    study.mkdir()
    (study / "__init__.py").write_text("STUDY = 1 / 0\n")
    with pytest.raises(ZeroDivisionError):
        cli.main(["calibrate", "--debug", "--study", str(study)])
    monkeypatch.setenv("PROBEKIT_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["calibrate", "--study", str(study)])


def test_f24_the_same_model_twice_is_refused(ckpt, tmp_path, cache, monkeypatch, capsys):
    _no_model_load(monkeypatch)
    assert _code(["run", "--model", str(ckpt), "--model", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    assert "give the same model once" in capsys.readouterr().err


def test_f25_one_checkpoint_one_folder_however_it_is_spelled(ckpt, monkeypatch):
    assert cli.results_folder(str(ckpt) + "/", "model") == cli.results_folder(str(ckpt), "model")
    monkeypatch.setenv("HOME", str(ckpt.parent))
    assert cli.results_folder("~/model", "model") == cli.results_folder(str(ckpt), "model")


# ----------------------------------------------------------------------------- the run lock

def test_f9_a_stale_lock_file_does_not_block(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".m-1234.lock").write_text("probekit run, pid 1 (killed long ago)")
    with cli._run_locks(out, ["m-1234"]):
        assert "pid" in (out / ".m-1234.lock").read_text()


def test_f10_the_lock_is_released_after_the_run_and_after_an_error(tmp_path):
    out = tmp_path / "out"
    with cli._run_locks(out, ["a", "org/b"]):
        pass
    with pytest.raises(RuntimeError):
        with cli._run_locks(out, ["a", "org/b"]):
            raise RuntimeError("the run failed")
    with cli._run_locks(out, ["a", "org/b"]):             # neither lock is held any more
        assert (out / "org" / ".b.lock").exists()


# ----------------------------------------------------------------------------- audit

def test_f7_a_link_loop_under_the_results_root_ends(tmp_path, synthetic_replication, capsys):
    root = tmp_path / "results"
    _save_run(root / "synth-10l", synthetic_replication)
    (root / "more").mkdir()
    os.symlink(root, root / "more" / "loop")
    assert cli.find_runs(root) == [root / "synth-10l"]


def test_f8_two_links_to_one_run_are_one_run(tmp_path, synthetic_replication, capsys):
    run = _save_run(tmp_path / "elsewhere" / "synth-10l", synthetic_replication)
    root = tmp_path / "results"
    root.mkdir()
    os.symlink(run, root / "a")
    os.symlink(run, root / "b")
    assert cli.find_runs(root) == [root / "a"]             # one folder on disk: read once, never twice
    assert cli.main(["audit", "--results", str(root)]) == 0
    assert "auditing 1 run(s)" in capsys.readouterr().out


def test_f26_report_from_a_nested_hub_run(tmp_path, synthetic_replication, capsys):
    import dataclasses
    run = _save_run(tmp_path / "r" / "org" / "m", dataclasses.replace(synthetic_replication, model="org/m"))
    assert cli.main(["report", "--from", str(run)]) == 0
    assert (run / "report.md").exists()


def test_f29_a_copy_inside_a_run_folder_is_not_a_second_run(tmp_path, synthetic_replication):
    root = tmp_path / "results"
    run = _save_run(root / "synth-10l", synthetic_replication)
    shutil.copytree(run / "probes", run / "old")
    shutil.copy(run / "replication.json", run / "old" / "replication.json")
    assert cli.find_runs(root) == [run]


# ----------------------------------------------------------------------------- checkpoints

def _shard(ckpt: Path, dest: Path) -> Path:
    """The tiny checkpoint re-saved in two shards with an index."""
    from safetensors.torch import load_file, save_file
    d = _copy(ckpt, dest)
    tensors = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    names = sorted(tensors)
    half = len(names) // 2
    wmap = {}
    for i, part in enumerate((names[:half], names[half:]), 1):
        f = f"model-0000{i}-of-00002.safetensors"
        save_file({k: tensors[k].contiguous() for k in part}, str(d / f), metadata={"format": "pt"})
        wmap.update({k: f for k in part})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    return d


@pytest.mark.parametrize("damage,match", [
    ("truncate", r"model-00002-of-00002.safetensors is \d+ bytes, its header describes \d+ \(truncated\)"),
    ("trailing", r"model-00002-of-00002.safetensors is \d+ bytes, its header describes \d+ \(trailing bytes\)"),
    ("json", r"model-00002-of-00002.safetensors: unreadable safetensors header"),
])
def test_f11_f12_f13_a_damaged_second_shard_is_named(ckpt, tmp_path, damage, match):
    from probekit.models.loading import preflight
    d = _shard(ckpt, tmp_path / "m")
    preflight(str(d))                                     # intact: accepted
    f = d / "model-00002-of-00002.safetensors"
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[:-8])
    elif damage == "trailing":
        f.write_bytes(data + b"\0" * 8)
    else:
        f.write_bytes(data[:8] + b"x" * (len(data) - 8))
    with pytest.raises(CheckpointError, match=match):
        preflight(str(d))


def test_f14_an_empty_pytorch_bin_is_named(ckpt, tmp_path):
    from probekit.models.checkpoint import check_dir
    d = _copy(ckpt, tmp_path / "m")
    (d / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin is empty \(0 bytes\)"):
        check_dir(d)


def test_f15_model_type_in_text_config_is_enough(ckpt, tmp_path):
    from probekit.models.checkpoint import check_dir
    d = _copy(ckpt, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["text_config"] = {"model_type": cfg.pop("model_type")}
    (d / "config.json").write_text(json.dumps(cfg))
    check_dir(d)


def test_f16_a_zero_byte_gguf(tmp_path):
    from probekit.models.loading import resolve
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is not a GGUF file"):
        resolve(str(tmp_path / "empty.gguf"))


def test_f17_eos_without_pad_pads_with_eos(ckpt, tmp_path):
    from probekit.models.loading import load_model
    d = _copy(ckpt, tmp_path / "m")
    tc = json.loads((d / "tokenizer_config.json").read_text())
    tc["pad_token"] = None
    (d / "tokenizer_config.json").write_text(json.dumps(tc))
    m = load_model(str(d))
    assert m.tokenizer.pad_token == m.tokenizer.eos_token is not None


@pytest.mark.parametrize("name,content,changes", [
    ("special_tokens_map.json", '{"bos_token": "<eos>"}', True),
    ("generation_config.json", '{"do_sample": true}', True),
    ("chat_template.jinja", "{{ messages }}", True),
    ("README.md", "# notes", False),
    ("LICENSE", "MIT", False),
    (".hidden", "x", False),
])
def test_f18_what_enters_the_fingerprint(ckpt, tmp_path, name, content, changes):
    from probekit.models.checkpoint import dir_fingerprint
    d = _copy(ckpt, tmp_path / "m")
    before = dir_fingerprint(d)
    (d / name).write_text(content)
    assert (dir_fingerprint(d) != before) == changes


# ----------------------------------------------------------------------------- expected tables

def test_f19_rows_of_another_study_are_kept(tmp_path):
    from probekit.core import expected as E
    from probekit.studies import load_study
    t = pd.DataFrame([E.expected_row("m", 4, "toy.colour_decodable", "x", "bool", "equal", expected=1,
                                     tolerance=0, source="s")])
    E.check_claim_ids(t, load_study("bogdan2025"))        # not a bogdan2025 claim: not this study's business


def test_f20_a_backup_copy_beside_the_expected_table(tmp_path, ckpt, cache, monkeypatch, capsys):
    from probekit.studies import load_study
    d = tmp_path / "expected"
    shutil.copytree(load_study().expected_dir, d)
    shutil.copy(d / "measured.parquet", d / "measured.backup.parquet")
    monkeypatch.setenv("PROBEKIT_EXPECTED_DIR", str(d))
    _no_model_load(monkeypatch)
    assert _code(["run", "--model", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "duplicate (model, claim, metric)" in err and err.count("\n") == 1


# ----------------------------------------------------------------------------- the store on a full disk

@pytest.fixture
def model():
    return tiny_model("llama", n_layers=2)


def test_f21_enospc_recording_a_chunk_resumes_byte_identically(model, tmp_path, monkeypatch):
    import probekit.extraction.store as S
    store = tmp_path / "store"
    real = S.atomic_write_json
    calls = {"n": 0}

    def full(path, obj, fsync=False):
        if Path(path).name == "progress.json" and obj.get("done"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, obj, fsync)
    monkeypatch.setattr(S, "atomic_write_json", full)
    with pytest.raises(DiskFullError, match="cannot record chunk .* it resumes after the last chunk recorded"):
        probekit.extract(model, STIMULI, store=store, batch_size=2, max_batch_tokens=16)
    monkeypatch.setattr(S, "atomic_write_json", real)
    again = probekit.extract(model, STIMULI, store=store, batch_size=2, max_batch_tokens=16)
    assert _same(again, probekit.extract(model, STIMULI, batch_size=2, max_batch_tokens=16))


def test_f22_enospc_marking_complete(model, tmp_path, monkeypatch):
    import probekit.extraction.store as S
    store = tmp_path / "store"
    real = S.atomic_write_json

    def full(path, obj, fsync=False):
        if Path(path).name == "complete.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, obj, fsync)
    monkeypatch.setattr(S, "atomic_write_json", full)
    with pytest.raises(DiskFullError, match="cannot mark .* complete"):
        probekit.extract(model, STIMULI, store=store)
    monkeypatch.setattr(S, "atomic_write_json", real)
    assert _same(probekit.extract(model, STIMULI, store=store), probekit.extract(model, STIMULI))


def test_f28_a_failed_reservation_leaves_no_reserved_space(model, tmp_path, monkeypatch):
    store = tmp_path / "store"

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(DiskFullError):
        probekit.extract(model, STIMULI, store=store)
    left = [p.name for e in store.iterdir() for p in e.iterdir()]
    assert left == [".lock"]


def test_compare_runs_meta_without_equals_is_a_usage_error(capsys):
    """Was: `compare_runs.py --meta solver_version` raised ValueError from dict()."""
    import importlib.util
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "perf" / "compare_runs.py"
    spec = importlib.util.spec_from_file_location("compare_runs_r3", path)
    CR = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(CR)
    with pytest.raises(SystemExit) as e:
        CR.main(["a", "b", "--meta", "solver_version"])
    assert e.value.code == 2 and "KEY=VALUE" in capsys.readouterr().err


def test_a_full_cache_during_gguf_conversion_falls_back_to_the_gguf(monkeypatch, tmp_path, cache):
    """Was: the GGUF conversion on a full cache raised SafetensorError (the fallback caught OSError only)."""
    import probekit.models.weights as W

    class SafetensorError(Exception):
        pass

    def full(kw, out):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")
    monkeypatch.setattr(W, "_convert", full)
    with pytest.warns(UserWarning, match="could not cache the converted m .*SafetensorError.*loading from GGUF"):
        assert W.converted_gguf({"fingerprint": "gguf-sha256:" + "0" * 64, "gguf_file": "x.gguf"}, "m") is None
    assert not any(p.name.startswith(".") for p in (cache / "models" / "m").iterdir()) \
        if (cache / "models" / "m").exists() else True
