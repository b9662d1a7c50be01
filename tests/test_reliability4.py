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
from test_reliability3 import TOY, _code, _no_model_load, _same, _toy_copy
from test_reliability3_faults import cache, ckpt  # noqa: F401 (fixtures)

STIMULI = mixed_stimuli(12)


# ============================================================================ 1. a too-long text

def test_a_text_longer_than_the_context_is_refused_before_the_model_loads(tmp_path, ckpt, cache, monkeypatch,
                                                                          capsys):
    """Was: found at tokenisation, after the model had loaded (one line since round 3, but late)."""
    _no_model_load(monkeypatch)
    long = "A red wall " + " ".join(["and more"] * 10_000)          # 20,000 words; the tiny model's context: 256
    study = _toy_copy(tmp_path, lambda t: t.replace("A red wall,", f"{long},", 1))
    assert cli.main(["run", "--study", str(study), "--model", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "context of 256 tokens (max_position_embeddings in model/config.json)" in err
    assert "set 'colours'" in err and "stimulus 0" in err and "90010 characters): 40010 tokens" in err and "shorten" in err


def test_the_length_check_runs_once_per_model(tmp_path, ckpt, cache, monkeypatch, capsys):
    """``run`` checks every model's texts before the first model loads, and replicate does not check them a
    second time (it still does when called alone); the model load is stopped right after the check."""
    import probekit.pipeline as P
    from probekit.core.errors import ModelUnavailableError
    calls = []
    real = P.check_stimulus_lengths
    monkeypatch.setattr(P, "check_stimulus_lengths", lambda m, frames, **kw: calls.append(str(m)) or real(m, frames, **kw))

    def stop(*a, **k):
        raise ModelUnavailableError("stopped after the length check (test)")
    monkeypatch.setattr(P, "load_model", stop)
    assert cli.main(["run", "--study", str(TOY), "--model", str(ckpt), "--out", str(tmp_path / "o")]) != 0
    assert "stopped after the length check" in capsys.readouterr().err
    assert calls == [str(ckpt)]
    calls.clear()
    with pytest.raises(ModelUnavailableError):
        P.replicate(str(ckpt), study=str(TOY), log=None)
    assert calls == [str(ckpt)]


def test_an_unreadable_tokenizer_is_one_checkpoint_error_in_memory_and_streamed(tmp_path, ckpt, cache, capsys):
    """Was: a JSONDecodeError traceback from the in-memory loader (the streamed one already said it in one line):
    both now read the tokenizer through checkpoint.load_tokenizer, before any weight."""
    from probekit.core.errors import CheckpointError
    from probekit.models.loading import load_model
    bad = tmp_path / "model"
    shutil.copytree(ckpt, bad)
    (bad / "tokenizer.json").write_text("{not json")
    for kw in (dict(), dict(stream_layers=True, device="auto", dtype="auto")):
        with pytest.raises(CheckpointError, match=r"its tokenizer cannot be loaded \(JSONDecodeError") as e:
            load_model(str(bad), **kw)
        assert "\n" not in str(e.value) and str(bad) in str(e.value)
    assert cli.main(["run", "--study", str(TOY), "--model", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its tokenizer cannot be loaded" in err and "Traceback" not in err, err


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


# ============================================================================ round 4: faults of our own design

# ----------------------------------------------------------------------------- the house move

def test_f31_an_old_import_path_is_the_moved_module_with_a_warning():
    import importlib
    import sys
    sys.modules.pop("probekit.solver", None)
    with pytest.warns(DeprecationWarning, match="probekit.solver moved to probekit.probes.solver"):
        old = importlib.import_module("probekit.solver")
    import probekit.probes.solver as new
    assert old is new and old.__spec__.name == "probekit.probes.solver"


def test_f32_a_class_through_the_old_path_is_the_same_class():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from probekit.checks import DiskFullError as Old
        from probekit.store import ActivationStore as OldStore
    from probekit.extraction.store import ActivationStore
    assert Old is DiskFullError and OldStore is ActivationStore    # `except probekit.checks.X` still catches


def test_f33_a_name_that_never_existed_is_not_aliased():
    with pytest.raises(ModuleNotFoundError, match="probekit.nosuch"):
        import probekit.nosuch  # noqa: F401


def _stimuli_dir(monkeypatch, d: Path):
    """PROBEKIT_STIMULI_DIR=d as the package would read it at import (STIMULI_DIR and the sets found there)."""
    import probekit.stimuli.sets as S
    monkeypatch.setenv("PROBEKIT_STIMULI_DIR", str(d))
    monkeypatch.setattr(S, "STIMULI_DIR", d)
    monkeypatch.setattr(S, "SET_NAMES", S._shipped_names(d) if d.is_dir() else ())


@pytest.mark.parametrize("kind,match", [("missing", "does not exist"), ("empty", "holds no set"),
                                        ("file", "is not a folder"), ("other", "holds colours")])
def test_f34_f37_a_stimuli_dir_without_the_sets(kind, match, tmp_path, ckpt, cache, monkeypatch, capsys):
    """Was: a raw KeyError ('unknown stimulus set 'items'; known: ' -- nothing) after the checks."""
    d = tmp_path / "sets"
    if kind == "empty":
        d.mkdir()
    elif kind == "file":
        d.write_text("x")
    elif kind == "other":
        d.mkdir()
        for ext in (".csv", ".json"):
            shutil.copy(TOY / f"colours{ext}", d / f"colours{ext}")
    _stimuli_dir(monkeypatch, d)
    _no_model_load(monkeypatch)
    assert _code(["run", "--model", str(ckpt), "--experiments", "items", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stimulus set(s) items, items_heldout" in err and match in err
    assert "unset PROBEKIT_STIMULI_DIR" in err


def test_f38_a_stimuli_dir_with_a_damaged_set(tmp_path, ckpt, cache, monkeypatch, capsys):
    import probekit.studies as St
    d = tmp_path / "sets"
    shutil.copytree(St.data_dir("stimuli"), d, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (d / "items.csv").write_text("text,target\n")
    _stimuli_dir(monkeypatch, d)
    _no_model_load(monkeypatch)
    assert _code(["run", "--model", str(ckpt), "--experiments", "items", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "items.csv has a header but no rows" in err


def test_f39_the_real_environment_variable_in_a_fresh_process(tmp_path, ckpt):
    import subprocess
    import sys
    env = dict(os.environ, PROBEKIT_STIMULI_DIR=str(tmp_path / "nowhere"), PROBEKIT_CACHE=str(tmp_path / "c"),
               PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    r = subprocess.run([sys.executable, "-m", "probekit", "run", "--model", str(ckpt), "--experiments", "items",
                        "--out", str(tmp_path / "o")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "nowhere does not exist" in r.stderr, r.stderr


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_f40_f41_an_expected_dir_that_is_not_a_folder(kind, tmp_path, ckpt, cache, monkeypatch, capsys):
    """Was: silently "no tables written yet" -- the measured regression rows dropped, every verdict judged
    against the paper rows, exit 0."""
    d = tmp_path / "expected"
    if kind == "file":
        d.write_text("x")
    monkeypatch.setenv("PROBEKIT_EXPECTED_DIR", str(d))
    _no_model_load(monkeypatch)
    assert _code(["run", "--model", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"PROBEKIT_EXPECTED_DIR={d}" in err
    assert ("is a file" if kind == "file" else "does not exist") in err


def test_f42_an_empty_expected_dir_is_the_paper_rows(tmp_path, monkeypatch):
    """An existing, empty folder means "no tables written yet" (documented): the paper rows from code."""
    from probekit.studies import load_study
    (tmp_path / "e").mkdir()
    monkeypatch.setenv("PROBEKIT_EXPECTED_DIR", str(tmp_path / "e"))
    rows = load_study().expected()
    assert len(rows) and set(rows.provenance) == {"paper"}


# ----------------------------------------------------------------------------- the solver's options

@pytest.mark.parametrize("kw,match", [({"penalty_selection": "LOO"}, "must be 'loo' or 'gcv', got 'LOO'"),
                                      ({"penalty_selection": None}, "must be 'loo' or 'gcv', got None"),
                                      ({"backend": "cuda"}, "must be one of numpy, torch, torch:cpu"),
                                      ({"backend": "torch:cuda"}, "needs a visible CUDA GPU")])
def test_f43_f45_bad_solver_options_are_named(kw, match):
    import torch
    from probekit.probes.solver import ridge_oof
    if kw.get("backend") == "torch:cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    with pytest.raises(ValueError, match=match):
        ridge_oof(None, None, np.zeros((4, 1)), **kw)


# ----------------------------------------------------------------------------- calibrate and the measured noise

@pytest.mark.parametrize("kind,match", [("missing", "is missing"), ("corrupt", "is unreadable (BadZipFile")])
def test_f46_f47_the_measured_noise_file_missing_or_damaged(kind, match, tmp_path, monkeypatch, capsys):
    """Was: missing -- every measured-noise cell 'skipped', exit 0 and "0 null rows above 5%" (a CI gate on it
    passed without the study's most realistic nulls); damaged -- a raw BadZipFile."""
    import probekit.profiles.simulate as sim
    import probekit.studies.bogdan2025.claims as C
    p = tmp_path / "noise_measured.npz"
    if kind == "corrupt":
        p.write_bytes(b"PK\x03\x04 not a zip")
    monkeypatch.setattr(C, "MEASURED_FILE", p)
    monkeypatch.setattr(sim, "_MEASURED", {})
    code = _code(["calibrate", "--claims", "item_peak_early", "--draws", "20", "--layers", "18", "--workers", "1",
                  "--out", str(tmp_path / "cal")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and match in err and "measure_noise.py" in err, err
    assert not (tmp_path / "cal" / "calibration.md").exists()


@pytest.mark.parametrize("argv,match", [(["--draws", "abc"], "--draws must be an integer >= 20"),
                                        (["--study", "/nonexistent/study"], "not a shipped study"),
                                        (["--claims", ","], "--claims names no claim")])
def test_f48_f50_calibrate_options(argv, match, tmp_path, capsys):
    assert _code(["calibrate", "--out", str(tmp_path / "cal"), *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


# ----------------------------------------------------------------------------- report --out and the summary

def _run_dir(tmp_path, rep) -> Path:
    from test_reliability3 import _save_run
    return _save_run(tmp_path / "results" / rep.model, rep)


@pytest.mark.parametrize("kind", ["file", "parent_file"])
def test_f51_f52_report_out_that_cannot_be_a_folder(kind, tmp_path, synthetic_replication, capsys):
    src = _run_dir(tmp_path, synthetic_replication)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker if kind == "file" else blocker / "sub"
    assert _code(["report", "--from", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, not a directory" in err and blocker.read_text() == "x"


def test_f53_report_in_place_while_a_run_writes_the_folder(tmp_path, synthetic_replication, capsys):
    """`report --from R` (written next to the run) while a `run` holds R's lock: refused, nothing written."""
    src = _run_dir(tmp_path, synthetic_replication)
    with cli._run_locks(src.parent, [src.name], "probekit run"):
        assert _code(["report", "--from", str(src)]) == 2
    err = capsys.readouterr().err
    assert "probekit run, pid" in err and not (src / "report.md").exists()


def test_f54_the_summary_with_missing_answers_and_reasons(synthetic_replication):
    """The three-answer summary: rows whose answer or reason is missing (NaN/None) or not one of the three
    answers fall back to PASS/FAIL, never a crash or a 'NAN' label."""
    from probekit.report.render import measure_run, all_verdicts
    from probekit.studies import load_study
    v = all_verdicts(measure_run(synthetic_replication), load_study())
    assert "answer" in v.columns
    v = v.copy()
    v["answer"] = [None, float("nan"), "maybe"] * (len(v) // 3) + [None] * (len(v) % 3)
    if "answer_reason" in v.columns:
        v["answer_reason"] = float("nan")
    lines = cli._summary_lines(v)
    text = "\n".join(lines)
    assert lines and "NAN" not in text and "MAYBE" not in text and ("PASS" in text or "FAIL" in text)


# ----------------------------------------------------------------------------- stimuli with odd unicode

def _one_row(tmp_path, text, target) -> Path:
    d = tmp_path / "s"
    d.mkdir(parents=True, exist_ok=True)
    src = (TOY / "colours.csv").read_text()
    (d / "colours.csv").write_text(src.replace("A red wall,red", f"{text},{target}", 1), encoding="utf-8")
    shutil.copy(TOY / "colours.json", d / "colours.json")
    return d / "colours.csv"


def test_f55_a_zero_width_joiner_inside_the_word_is_named(tmp_path):
    from probekit.stimuli.sets import StimulusError, load_file
    with pytest.raises(StimulusError, match=r"row 0 text='A re\\u200dd wall' word='red': target word does not "
                                            r"occur"):
        load_file(_one_row(tmp_path, "A re\u200dd wall", "red"))


def test_f56_a_byte_order_mark_and_crlf_lines_read_as_plain_utf8(tmp_path):
    from probekit.stimuli.sets import load_file
    p = _one_row(tmp_path, "A red wall", "red")
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes().replace(b"\n", b"\r\n"))
    df = load_file(p)
    assert list(df.columns[:2]) == ["text", "target"] and df.text[0] == "A red wall" and df.target[0] == "red"


def test_f57_an_emoji_target_pools_its_own_tokens(tmp_path):
    """A 4-byte emoji target (split into byte tokens): pooled over exactly its tokens, not its neighbours."""
    from probekit.stimuli.sets import load_file
    df = load_file(_one_row(tmp_path, "A \U0001F534 wall", "\U0001F534")).iloc[:2].reset_index(drop=True)
    m = tiny_model("llama", n_layers=2)
    acts = probekit.extract(m, df)
    n = len(m.tokenizer("\U0001F534", add_special_tokens=False)["input_ids"])
    assert acts.stimuli.n_target_tokens[0] == n >= 2


def test_f58_a_tab_before_the_target_pools_the_same_tokens(tmp_path):
    from probekit.stimuli.sets import load_file
    a = load_file(_one_row(tmp_path / "a", "A red wall", "\tred")).iloc[:2].reset_index(drop=True)
    b = load_file(_one_row(tmp_path / "b", "A red wall", "red")).iloc[:2].reset_index(drop=True)
    m = tiny_model("llama", n_layers=2)
    assert _same(probekit.extract(m, a), probekit.extract(m, b))


def test_the_length_check_of_a_gguf_file_does_not_hash_it(tmp_path, monkeypatch):
    """A user's .gguf: its context comes from the header; the file is not hashed again (resolve hashes it)."""
    import probekit.models.loading as L
    from probekit.extraction.forward import ExtractionError
    from probekit.pipeline import check_stimulus_lengths
    try:
        _, kw = L.resolve("smollm2-135m")
    except L.ModelUnavailableError as exc:
        pytest.skip(str(exc))
    link = tmp_path / "mine.gguf"
    link.symlink_to(Path(kw["path"]) / kw["gguf_file"])
    monkeypatch.setattr(L, "resolve", lambda *a: (_ for _ in ()).throw(AssertionError("resolved (hashed)")))
    check_stimulus_lengths(str(link), [STIMULI])
    with pytest.raises(ExtractionError, match=r"stated limit of 2 tokens"):
        check_stimulus_lengths(str(link), [STIMULI.iloc[:1]], max_tokens=2)


def test_replicate_refuses_a_too_long_text_before_loading(tmp_path, ckpt, cache, monkeypatch):
    """The library path too: replicate() checks the lengths before load_model."""
    import probekit.pipeline as P
    from probekit.extraction.forward import ExtractionError
    monkeypatch.setattr(P, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    study = _toy_copy(tmp_path, lambda t: t.replace("A red wall,", "A red wall" + " x" * 300 + ",", 1))
    with pytest.raises(ExtractionError, match=r"set 'colours' stimulus 0 .* 610 characters\): 610 tokens"):
        P.replicate(str(ckpt), study=str(study))


def test_f59_a_stream_dir_that_is_a_file_is_refused_before_the_work(tmp_path, ckpt, cache, monkeypatch, capsys):
    """Was: `/x: File exists` (exit 1) after the model had loaded, at the first streamed set, not naming the
    variable."""
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("PROBEKIT_STREAM_DIR", str(tmp_path / "f"))
    _no_model_load(monkeypatch)
    assert _code(["run", "--model", str(ckpt), "--stream-layers", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PROBEKIT_STREAM_DIR" in err and "is a file, not a directory" in err
