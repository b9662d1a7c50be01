"""Faults of issue 12, one test each: every one reproduces the original fault and checks that it now ends
in a specific error or a correct result (never silently wrong). See docs/reliability.md for the table."""
from __future__ import annotations

import errno
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import probekit
import probekit.extraction.forward as ex
from probekit import cli
from probekit.core.activations import COMPONENTS
from probekit.core.checks import ArgumentError
from probekit.models.testing import mixed_stimuli, tiny_model

STIMULI = mixed_stimuli(24)


@pytest.fixture
def model():
    return tiny_model("llama", n_layers=2)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty PROBEKIT_CACHE for the test."""
    d = tmp_path / "cache"
    monkeypatch.setenv("PROBEKIT_CACHE", str(d))
    return d


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def _same(a, b):
    for l in a.layers:
        for c in COMPONENTS:
            np.testing.assert_array_equal(np.asarray(a.get(l, c)), np.asarray(b.get(l, c)))


# ----------------------------------------------------------------------------- bad counts

@pytest.mark.parametrize("argv", [["--batch-size", "-1"], ["--batch-size", "0"], ["--permutations", "-5"],
                                  ["--bootstrap", "-1"], ["--batch-size", "two"], ["--max-batch-tokens", "0"]])
def test_bad_counts_exit_2_before_touching_the_cache(argv, cache, tmp_path, capsys):
    """Was: --batch-size -1 exited 0 with every score 0.5 and poisoned the store; 0 and negative
    --permutations/--bootstrap gave raw tracebacks."""
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "--experiments", "relations", "--out", str(tmp_path / "out"), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert argv[0] in err and "integer >=" in err
    assert _files(cache) == [] and not (tmp_path / "out").exists()


def test_batch_size_minus_one_never_poisons_the_store(model, tmp_path):
    """Was: no batch planned, preallocated zeros checksummed as a complete entry, reused by the next run."""
    store = tmp_path / "store"
    for bad in (-1, 0, 2.5, True):
        with pytest.raises(ArgumentError, match="batch_size must be an integer >= 1"):
            probekit.extract(model, STIMULI, batch_size=bad, store=store)
    assert _files(store) == []
    stored = probekit.extract(model, STIMULI, batch_size=4, store=store)      # the following normal run
    _same(stored, probekit.extract(model, STIMULI, batch_size=4))
    assert np.abs(np.asarray(stored.get(1, "mlp_out"))).min(axis=1).all() > 0   # real rows, no zero rows



def test_cli_batch_size_minus_one_then_a_normal_run_gives_real_scores(cache, tmp_path, capsys):
    """The issue's 'done when': --batch-size -1 exits 2 before touching the store, and a following normal
    run gives the real scores (those of an uncached run), not the 0.5s of a poisoned entry."""
    from probekit.models.loading import load_model
    from probekit.pipeline import replicate
    ckpt = tmp_path / "tiny-ckpt"
    src = tiny_model("llama", n_layers=2)
    src.model.save_pretrained(ckpt)
    src.tokenizer.save_pretrained(ckpt)
    argv = ["run", "--model", str(ckpt), "--experiments", "relations", "--permutations", "4",
            "--bootstrap", "20", "--out", str(tmp_path / "results")]
    with pytest.raises(SystemExit) as e:
        cli.main(argv + ["--batch-size", "-1"])
    assert e.value.code == 2 and _files(cache) == []
    assert cli.main(argv) == 0
    got = pd.read_parquet(tmp_path / "results" / cli.results_folder(str(ckpt), "tiny-ckpt") / "scores.parquet")
    ref = replicate(load_model(str(ckpt)), ["relations"], store=False, log=None,
                    probe_kw={"n_permutations": 4, "n_bootstrap": 20}).scores()
    np.testing.assert_array_equal(got["value"].to_numpy(), ref["value"].to_numpy())
    assert (got["value"] != 0.5).mean() > 0.5

def test_store_refuses_a_plan_that_skips_rows(model, tmp_path):
    from probekit.extraction.store import ActivationStore, StoreCorruptError
    entry = ActivationStore(tmp_path).entry({"n_stimuli": 4, "n_layers": 1, "d_model": 2})
    with pytest.raises(ValueError, match="covers 0 row slots for 4 stimuli"):
        entry.begin([])
    entry.begin([[[0, 1], [2, 3]]])
    with pytest.raises(StoreCorruptError, match=r"chunks \[0\] not written"):
        entry.finish()                              # nothing written yet: never checksum the zeros
    assert not entry.is_complete()


def test_library_functions_validate_their_counts(model):
    from probekit.pipeline import replicate
    from probekit.probes.grid import make_synthetic_acts, probe_grid
    acts = make_synthetic_acts(n_groups=12, per_group=2, d=8, n_layers=2)
    for kw, match in [({"n_permutations": -1}, "n_permutations"), ({"n_bootstrap": -3}, "n_bootstrap"),
                      ({"n_splits": 1}, "n_splits"), ({"level": 1.5}, "level")]:
        with pytest.raises(ArgumentError, match=match):
            probe_grid(acts, **kw)
    with pytest.raises(ArgumentError, match="batch_size"):
        replicate(model, ["relations"], store=False, batch_size=0, log=None)
    with pytest.raises(ArgumentError, match="n_permutations"):
        replicate(model, ["relations"], store=False, probe_kw={"n_permutations": -1}, log=None)


# ----------------------------------------------------------------------------- probe-results cache

FAST_PROBES = {"n_permutations": 4, "n_bootstrap": 20, "n_control": 1}


def _results_dirs(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "results").iterdir() if p.is_dir() and not p.name.startswith("."))


def test_flipped_bit_in_cached_scores_is_recomputed(model, cache):
    """Was: one flipped bit in <cache>/results/<key>/scores.parquet turned 0.717 into 0.967, reported."""
    from probekit.pipeline import replicate
    clean = replicate(model, ["relations"], probe_kw=FAST_PROBES, log=None).results["relations"].scores
    (d,) = _results_dirs(cache)
    assert json.loads((d / "checksums.json").read_text())["sha256"].keys() >= {"scores.parquet", "meta.json"}
    # flip one bit of one stored float64 value (the accuracy of a cell), keeping the parquet readable
    p = d / "scores.parquet"
    df = pd.read_parquet(p)
    v = df["value"].to_numpy().copy()
    v[3] = np.frombuffer((np.float64(v[3]).view(np.uint64) ^ np.uint64(1 << 51)).tobytes(), np.float64)[0]
    df["value"] = v
    df.to_parquet(p, index=False)
    with pytest.warns(UserWarning, match="checksum mismatch"):
        again = replicate(model, ["relations"], probe_kw=FAST_PROBES, log=None).results["relations"].scores
    pd.testing.assert_frame_equal(again, clean)
    # the recomputed entry is whole again: a third run reads it without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = replicate(model, ["relations"], probe_kw=FAST_PROBES, log=None).results["relations"].scores
    pd.testing.assert_frame_equal(third, clean)


# ----------------------------------------------------------------------------- probes

def test_finite_overflowing_activation_is_refused_with_layer_and_component():
    """Was: a finite 3e38 gave only numpy overflow warnings; continuous scores NaN, accuracies shifted."""
    from probekit.probes.grid import ProbeInputError, make_synthetic_acts, probe_grid
    acts = make_synthetic_acts(n_groups=12, per_group=2, d=8, n_layers=3)
    acts._arrays[(2, "attn_out")][5, 3] = 3e38
    with pytest.raises(ProbeInputError, match=r"layer 2 component 'attn_out'.*largest 3e\+38 at row 5, dim 3"):
        probe_grid(acts, n_permutations=0, n_bootstrap=0)
    acts._arrays[(2, "attn_out")][5, 3] = 1e6        # large but harmless: probed normally
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = probe_grid(acts, n_permutations=0, n_bootstrap=0)
    assert np.isfinite(res.scores.value).all()


def test_seven_stimuli_six_folds_gets_a_specific_error():
    """Was: scikit-learn's 'n_splits=6 cannot be greater than the number of members in each class'."""
    from probekit.core.activations import ActivationSet
    from probekit.probes.grid import ProbeInputError, probe_grid
    rng = np.random.default_rng(0)
    stim = pd.DataFrame({"text": [f"t{i}" for i in range(7)], "target": [f"w{i}" for i in range(7)],
                         "group": np.arange(7), "y": [0, 1, 0, 1, 0, 1, 0]})
    stim.attrs["labels"] = {"y": {"kind": "binary", "role": "semantic", "group": "group"}}
    acts = ActivationSet.from_arrays({(l, c): rng.standard_normal((7, 8)).astype(np.float32)
                                      for l in range(2) for c in COMPONENTS}, stim, model_name="x")
    with pytest.raises(ProbeInputError) as e:
        probe_grid(acts, n_permutations=0, n_bootstrap=0)
    msg = str(e.value)
    assert "7 stimuli in 7 groups" in msg and "class 0: 4 stimuli in 4 groups" in msg
    assert "class 1: 3 stimuli in 3 groups" in msg and "use n_splits=4 or fewer" in msg
    assert probe_grid(acts, n_splits=4, n_permutations=0, n_bootstrap=0).scores.value.notna().all()


# ----------------------------------------------------------------------------- load_file

@pytest.fixture
def user_set(tmp_path):
    """A valid bring-your-own set (the shipped relations, no hash): returns (frame, sidecar dict, writer)."""
    import probekit.stimuli.sets as S
    meta = json.loads((S.STIMULI_DIR / "relations.json").read_text())
    meta.pop("hash")
    df = pd.read_csv(S.STIMULI_DIR / "relations.csv")

    def write(d, name="mine", suffix=".csv", sidecar=None):
        p = tmp_path / f"{name}{suffix}"
        d.to_csv(p, index=False) if suffix == ".csv" else d.to_parquet(p, index=False)
        (tmp_path / f"{name}.json").write_text(json.dumps(meta) if sidecar is None else sidecar)
        return p
    assert len(S.load_file(write(df))) == len(df)
    return df, meta, write


def _problems(path):
    import probekit.stimuli.sets as S
    with pytest.raises(S.StimulusError) as e:
        S.load_file(path)
    return e.value.problems, str(e.value)


def test_load_file_mixed_yes_no_labels_lists_every_row(user_set):
    """Was: numbers mixed with "yes"/"no" dropped those rows silently (n 96 -> 76); all-"yes"/"no" labels
    raised `could not convert string to float` and the collected problems were lost."""
    df, _, write = user_set
    d = df.copy()
    d["related"] = d["related"].astype(object)
    d.loc[::10, "related"] = d.loc[::10, "related"].map({1: "yes", 0: "no"})
    probs, msg = _problems(write(d))
    assert sorted(p.row for p in probs) == list(range(0, len(d), 10))        # every one, nothing else
    assert all(p.word == "related" and "1 for yes/true, 0 for no/false" in p.fix for p in probs)
    d["related"] = df["related"].map({1: "yes", 0: "no"})
    probs, _ = _problems(write(d))
    assert len(probs) == len(d) and "not a number" in probs[0].what


def test_load_file_non_utf8_bytes_name_file_line_and_byte(user_set, tmp_path):
    """Was: a raw UnicodeDecodeError without the file or row."""
    df, _, write = user_set
    p = write(df)
    raw = p.read_bytes()
    i = raw.index(b"A bee and flower")
    p.write_bytes(raw[:i] + b"A b\xe9e and flower" + raw[i + len(b"A bee and flower"):])
    probs, msg = _problems(p)
    line = raw[:i].count(b"\n") + 1
    assert f"{p.name}: bytes b'\\xe9' at byte {i + 3} (line {line}, column 4) are not UTF-8" in msg
    assert probs[0].row == line - 2 and "UTF-8" in probs[0].fix


def test_load_file_int_target_column(user_set):
    """Was: `'int' object is not iterable` (a parquet file with an integer target column)."""
    df, _, write = user_set
    d = df.copy()
    d["target"] = range(len(d))
    probs, _ = _problems(write(d, suffix=".parquet"))
    assert len(probs) == len(d)                                      # one per row, no follow-up noise
    assert probs[5].row == 5 and probs[5].what == "target 5 is a int, not a word"


@pytest.mark.parametrize("content,match", [("", "is empty (no header, no rows)"),
                                           ("text,target,group,related,relatedness\n", "has a header but no rows")])
def test_load_file_empty_or_header_only(user_set, content, match):
    """Was: pandas' EmptyDataError / KeyError 'group'."""
    _, _, write = user_set
    p = write(pd.DataFrame({"text": ["x"]}))
    p.write_text(content)
    probs, _ = _problems(p)
    assert len(probs) == 1 and match in probs[0].what


def test_load_file_malformed_sidecar_names_file_and_position(user_set):
    """Was: a bare JSONDecodeError without the file name."""
    df, meta, write = user_set
    text = json.dumps(meta, indent=1)
    bad = text.replace('"kind": "binary",', '"kind": "binary"', 1)
    p = write(df, sidecar=bad)
    probs, msg = _problems(p)
    err_line = bad[:bad.index('"kind": "binary"')].count("\n") + 2
    assert "mine.json is not valid JSON: Expecting ',' delimiter at line" in msg
    assert f"line {err_line}," in msg


def test_load_file_reports_problems_together(user_set):
    """Encoding, label and validation problems in one error, not one at a time."""
    df, _, write = user_set
    d = df.copy()
    d["related"] = d["related"].astype(object)
    d.loc[3, "related"] = "yes"
    d.loc[7, "text"] = "A bee and a flower "                  # whitespace + target problems (validate)
    p = write(d)
    raw = p.read_bytes()
    p.write_bytes(raw.replace(b"A church and organ", b"A church and \xf6rgan", 1))
    probs, _ = _problems(p)
    whats = " | ".join(p.what for p in probs)
    assert "not UTF-8" in whats and "label value 'yes' is not a number" in whats and "whitespace" in whats


# ----------------------------------------------------------------------------- filesystem

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {"os.mkdir": 1, "os.rename": 2, "os.remove": 1, "os.rmdir": 1, "os.truncate": 1, "os.chmod": 1,
                "os.link": 2, "os.symlink": 2, "os.utime": 1}
_READ_ONLY: dict = {"roots": (), "attempts": [], "hooked": False}


def _audit(event, args):
    roots = _READ_ONLY["roots"]
    if not roots:
        return
    if event == "open":
        path, _, flags = args
        paths = [path] if isinstance(path, (str, bytes, os.PathLike)) and flags & _WRITE_FLAGS else []
    elif event in _PATH_EVENTS:
        paths = [a for a in args[:_PATH_EVENTS[event]] if isinstance(a, (str, bytes, os.PathLike))]
    else:
        return
    for p in paths:
        p = os.path.abspath(os.fsdecode(p))
        if any(p == r or p.startswith(r + os.sep) for r in roots):
            _READ_ONLY["attempts"].append((event, p))
            raise PermissionError(errno.EROFS, "Read-only file system", p)



@pytest.fixture
def read_only():
    """``read_only(path)``: from now on every write under ``path`` fails with EROFS, as on a read-only mount
    (also for root, who ignores chmod); ``read_only.attempts`` lists what tried to write."""
    class RO:
        attempts = _READ_ONLY["attempts"]

        def __call__(self, path):
            _READ_ONLY["roots"] = (*_READ_ONLY["roots"], os.path.abspath(path))
    if not _READ_ONLY["hooked"]:          # an audit hook cannot be removed: install it once, only if needed
        sys.addaudithook(_audit)
        _READ_ONLY["hooked"] = True
    _READ_ONLY["attempts"].clear()
    yield RO()
    _READ_ONLY["roots"] = ()


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_warm_cache_works_read_only(model, cache, read_only):
    """Was: even a warm cache could not be read when read-only (`.lock` and `verified` writes)."""
    from probekit.pipeline import replicate
    warm = replicate(model, ["relations"], probe_kw=FAST_PROBES, log=None).results["relations"].scores
    before = _snapshot(cache)
    read_only(cache)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no "rebuilding", no "not cached": read as it is
        again = replicate(model, ["relations"], probe_kw=FAST_PROBES, log=None).results["relations"].scores
    pd.testing.assert_frame_equal(again, warm)
    assert _snapshot(cache) == before
    # the only writes tried: taking the entry's lock (mkdir, .lock), which fails and is read without it
    assert all(p.endswith(".lock") or Path(p).parent.name == "activations" for _, p in read_only.attempts)


def test_cold_read_only_cache_extracts_in_memory(model, cache, read_only):
    from probekit.pipeline import replicate
    clean = replicate(model, ["relations"], store=False, probe_kw=FAST_PROBES, log=None)
    cache.mkdir()
    read_only(cache)
    with pytest.warns(UserWarning, match="read-only"):
        rep = replicate(model, ["relations"], probe_kw=FAST_PROBES, log=None)
    pd.testing.assert_frame_equal(rep.results["relations"].scores, clean.results["relations"].scores)
    assert _files(cache) == []


def test_embedded_model_verification_on_a_read_only_cache(cache, read_only):
    """The GGUF check's `verified` stamp is a convenience: a read-only cache verifies every time instead."""
    from probekit.models.loading import ModelUnavailableError, embedded_gguf
    cache.mkdir()
    read_only(cache)
    try:
        path = embedded_gguf("smollm2-135m")
    except ModelUnavailableError as exc:
        pytest.skip(str(exc))
    assert path.exists() and read_only.attempts and _files(cache) == []


def test_no_store_never_writes_to_the_cache(model, cache, read_only):
    """Was: --no-store still touched the cache."""
    from probekit.pipeline import replicate
    read_only(cache)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        replicate(model, ["relations"], store=False, probe_kw=FAST_PROBES, log=None)
    assert read_only.attempts == [] and not cache.exists()


def _no_model_load(monkeypatch):
    import probekit.models.loading
    import probekit.pipeline

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the paths were checked")
    monkeypatch.setattr(probekit.models.loading, "load_model", refuse)
    monkeypatch.setattr(probekit.pipeline, "replicate", refuse)


@pytest.mark.parametrize("blocked", ["cache", "cache/activations", "cache/results", "out_parent"])
def test_a_file_in_the_way_is_reported_before_any_work(blocked, cache, tmp_path, monkeypatch, capsys):
    """Was: a file where the cache, activations/, results/ or the --out parent should be surfaced only
    after all extraction and probing (or as a raw NotADirectoryError)."""
    _no_model_load(monkeypatch)
    out = tmp_path / "runs" / "results"
    f = (tmp_path / "runs") if blocked == "out_parent" else tmp_path / blocked
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("not a directory")
    assert cli.main(["run", "--experiments", "relations", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{f} is a file, not a directory" in err
    assert ("--out" in err) if blocked == "out_parent" else ("PROBEKIT_CACHE" in err)


def test_library_names_a_file_in_the_way(model, tmp_path):
    from probekit.core.checks import PathError
    from probekit.studies.bogdan2025.experiments import EXPERIMENTS
    from probekit.pipeline import probe_experiment
    (tmp_path / "store").write_text("x")
    with pytest.raises(PathError, match="store is a file, not a directory"):
        probekit.extract(model, STIMULI, store=tmp_path / "store")
    acts = probekit.extract(model, EXPERIMENTS["relations"].stimuli(), store=tmp_path / "acts")
    (tmp_path / "res").write_text("x")
    with pytest.raises(PathError, match="res is a file, not a directory"):
        probe_experiment(acts, EXPERIMENTS["relations"], FAST_PROBES, cache=str(tmp_path / "res"))


# ----------------------------------------------------------------------------- report / audit

@pytest.fixture
def saved_run(tmp_path, synthetic_replication):
    d = tmp_path / "results" / "synth-10l"
    synthetic_replication.save(d)
    return d


@pytest.mark.parametrize("damage,match", [
    ("json", r"replication.json is corrupt \(JSONDecodeError"),
    ("field", r"replication.json is corrupt \(KeyError: missing field 'experiments'\)"),
    ("probes", r"lists experiment 'items' but .*probes/items is missing"),
    ("bitflip", r"scores.parquet: checksum mismatch"),
])
def test_report_from_a_damaged_run_says_what_is_wrong(saved_run, damage, match, capsys):
    """Was: a raw JSONDecodeError / FileNotFoundError traceback."""
    import shutil
    rj = saved_run / "replication.json"
    if damage == "json":
        rj.write_text(rj.read_text()[:40])
    elif damage == "field":
        meta = json.loads(rj.read_text())
        del meta["experiments"]
        rj.write_text(json.dumps(meta))
    elif damage == "probes":
        shutil.rmtree(saved_run / "probes")
    else:
        p = saved_run / "probes" / "items" / "scores.parquet"
        b = bytearray(p.read_bytes())
        b[len(b) // 2] ^= 1
        p.write_bytes(bytes(b))
    assert cli.main(["report", "--from", str(saved_run)]) == 1
    err = capsys.readouterr().err
    import re
    assert re.search(match, err) and "rerun `probekit run" in err
    # the audit refuses too, naming the run, rather than leaving the model out
    assert cli.main(["audit", "--results", str(saved_run.parent)]) == 1
    err = capsys.readouterr().err
    assert re.search(match, err) and "audit not written" in err
    assert not (saved_run.parent / "audit.md").exists()


def test_audit_over_an_empty_or_missing_results_dir(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["audit", "--results", str(tmp_path / "empty")]) == 1
    assert "no runs under" in capsys.readouterr().err
    assert cli.main(["audit", "--results", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    (tmp_path / "empty" / "m").mkdir()
    (tmp_path / "empty" / "m" / "replication.json").write_text(json.dumps(
        {"model": "m", "n_layers": 4, "d_model": 8, "markers": [], "fingerprint": "x", "experiments": []}))
    assert cli.main(["audit", "--results", str(tmp_path / "empty")]) == 1
    assert "none of the 1 run(s)" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "audit.md").exists()


# ----------------------------------------------------------------------------- extraction cost

def test_token_budget_gives_one_long_text_its_own_batch():
    """Was: a 5,000-word text in a 12-row set padded every row to ~5,000 tokens in one batch (~10 min)."""
    from probekit.extraction.forward import DEFAULT_MAX_BATCH_TOKENS, plan_batches
    lengths = [7, 9, 6, 8, 6500, 7, 5, 9, 8, 6, 7, 9]
    assert plan_batches(lengths, 32) == [[6, 2, 9, 0, 5, 10, 3, 8, 1, 7, 11], [4]]
    assert plan_batches(lengths, 32, max_tokens=None) == [sorted(range(12), key=lambda i: (lengths[i], i))]
    # short texts (the embedded sets: <= ~160 tokens) are batched by count alone, as before
    short = [5 + (i * 37) % 150 for i in range(354)]
    assert [len(b) for b in plan_batches(short, 32)] == [32] * 11 + [2]
    assert 32 * 160 <= DEFAULT_MAX_BATCH_TOKENS
    # a moderately long text does not pad many short ones either (batch over 2048 tokens, mostly padding)
    assert plan_batches([6] * 11 + [300], 32)[-1] == [11]
    assert plan_batches([6] * 11 + [150], 32) == [list(range(12))]     # 1800 padded tokens: cheap, kept
    # padded tokens per batch never exceed the budget unless one text alone does
    lengths = [3, 40, 41, 90, 91, 92, 300, 5, 6]
    for b in plan_batches(lengths, 4, max_tokens=100):
        assert len(b) * max(lengths[i] for i in b) <= 100 or len(b) == 1


def test_long_text_batched_alone_gives_the_same_activations(model, monkeypatch):
    stim = pd.DataFrame({"text": [f"An apple {i}" for i in range(11)] + ["A church and organ " * 20 + "and apple"],
                         "target": ["apple"] * 12})
    shapes = []
    real = ex._forward

    def recording(m, hooks, ids, weights, pad_id):
        shapes.append((len(ids), max(len(x) for x in ids)))
        return real(m, hooks, ids, weights, pad_id)
    monkeypatch.setattr(ex, "_forward", recording)
    budget = probekit.extract(model, stim, batch_size=32, max_batch_tokens=512)
    assert len(shapes) == 2 and shapes[0][0] == 11 and shapes[0][1] < 10 and shapes[1][0] == 1
    one = probekit.extract(model, stim, batch_size=1)
    for l in range(model.n_layers):
        for c in COMPONENTS:
            np.testing.assert_allclose(budget.get(l, c), one.get(l, c), rtol=1e-4, atol=1e-5)


def test_progress_lines_show_stimuli_and_tokens_per_second(model, monkeypatch, capsys):
    """Was: no progress output at all during a 10-minute extraction."""
    monkeypatch.setattr(ex, "PROGRESS_AFTER_S", 600.0)            # shorter than the threshold: quiet
    probekit.extract(model, STIMULI, batch_size=4)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(ex, "PROGRESS_AFTER_S", 0.0)              # as if it had run for a while
    monkeypatch.setattr(ex, "PROGRESS_EVERY_S", 0.0)
    probekit.extract(model, STIMULI, batch_size=4)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 7                                         # 6 batches + the closing line
    assert lines[0].startswith("extract tiny-llama: 4/24 stimuli, ") and "stimuli/s" in lines[0]
    assert "tokens/s" in lines[0] and "s left" in lines[0] and "done in" in lines[-1]
    probekit.extract(model, STIMULI, batch_size=4, progress=False)
    assert capsys.readouterr().err == ""


def test_too_long_text_error_shows_it_truncated(model):
    """Was: the whole text in the message (50,000 characters)."""
    from probekit.extraction.forward import ExtractionError
    long = "An apple " + "and a church " * 3900
    stim = pd.DataFrame({"text": ["An apple", long], "target": ["apple", "apple"]})
    with pytest.raises(ExtractionError) as e:
        probekit.extract(model, stim)
    msg = str(e.value)
    assert len(msg) < 400 and f"{len(long)} characters" in msg and repr(long[:80]) in msg
    assert msg.startswith("stimulus 1 (") and "exceed model tiny-llama's context of 256" in msg


def test_token_budget_leaves_the_embedded_sets_batches_unchanged(smollm2):
    """The budget binds only for long texts: for every shipped set the batches are exactly those of a plain
    count, so the stored activations stay byte-identical to the ones before the budget existed."""
    from probekit.studies.bogdan2025.experiments import EXPERIMENTS
    from probekit.extraction.forward import encode, plan_chunks
    for exp in EXPERIMENTS.values():
        stim = exp.stimuli()
        enc = encode(smollm2.tokenizer, stim, stim.attrs.get("pooling") or "target_mean", smollm2.name)
        lengths = [len(x) for x in enc.input_ids]
        for bs in (32, 64):
            assert plan_chunks(lengths, bs) == plan_chunks(lengths, bs, max_tokens=None), (exp.name, bs)


# ----------------------------------------------------------------------------- robust behaviours (kept)

_CHILD = r"""
import os, signal, sys
import numpy as np
import probekit, probekit.extraction.forward as ex
from probekit.models.testing import mixed_stimuli, tiny_model
sys.path.insert(0, {tests!r})
from test_reliability import STIMULI
store, mode, out = sys.argv[1], sys.argv[2], sys.argv[3]
m = tiny_model("llama", n_layers=2)
if mode == "kill":
    real, n = ex._forward, [0]
    def dying(*a, **k):
        n[0] += 1
        if n[0] == 10:                                 # mid-extraction, in the second chunk
            os.kill(os.getpid(), signal.SIGKILL)       # kill -9: no finally, no cleanup
        return real(*a, **k)
    ex._forward = dying
acts = probekit.extract(m, STIMULI, batch_size=2, store=store)
np.savez(out, **{{f"{{l}}_{{c}}": np.asarray(acts.get(l, c)) for l in acts.layers for c in acts.components}})
"""


def _child(tmp_path, *args):
    import subprocess
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(tests=str(Path(__file__).parent)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(probekit.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_mid_extraction_resumes_byte_identically(model, tmp_path, monkeypatch):
    import signal
    from probekit.extraction.forward import plan_chunks
    p = _child(tmp_path, tmp_path / "store", "kill", tmp_path / "never.npz")
    p.wait(timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr.read()
    (entry,) = [d for d in (tmp_path / "store").iterdir() if d.is_dir()]
    done = json.loads((entry / "progress.json").read_text())["done"]
    assert not (entry / "complete.json").exists() and done == [0]           # 8 of 12 batches kept
    calls = {"n": 0}
    real = ex._forward

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)
    monkeypatch.setattr(ex, "_forward", counting)
    resumed = probekit.extract(model, STIMULI, batch_size=2, store=tmp_path / "store")
    n_batches = sum(len(c) for c in plan_chunks([1] * len(STIMULI), 2))
    assert calls["n"] == n_batches - 8                                      # only the chunk not done
    _same(resumed, probekit.extract(model, STIMULI, batch_size=2))


def test_concurrent_cold_runs_on_one_cache_agree_byte_for_byte(tmp_path):
    procs = [_child(tmp_path, tmp_path / "store", "plain", tmp_path / f"run{k}.npz") for k in range(2)]
    for p in procs:
        p.wait(timeout=300)
        assert p.returncode == 0, p.stderr.read()
    a, b = np.load(tmp_path / "run0.npz"), np.load(tmp_path / "run1.npz")
    assert sorted(a.files) == sorted(b.files) and len(a.files) == 2 * 3
    for k in a.files:
        assert a[k].tobytes() == b[k].tobytes() and np.abs(a[k]).sum() > 0
    assert len([d for d in (tmp_path / "store").iterdir() if d.is_dir()]) == 1   # one entry, written once


def test_a_failed_model_load_is_remembered_for_the_pytest_session(monkeypatch):
    """issue 12: a model that fails to load with anything but 'unavailable' was loaded again for every claim
    test (7 loads; hours for a 70B). Now the failure is remembered: one load, and every claim fails with it."""
    import benchmarks.conftest as bc
    import probekit.pipeline as pl
    from probekit.core.errors import CheckpointError
    calls = []

    def boom(name, **kw):
        calls.append(name)
        raise CheckpointError(f"{name}: config.json only, no weights")
    monkeypatch.setattr(pl, "replicate", boom)
    monkeypatch.setattr(bc, "_RUNS", {})
    for _ in range(7):
        with pytest.raises(pytest.fail.Exception, match="not retried in this session"):
            bc._run("broken-model", config=None, study=None)
    assert calls == ["broken-model"]
