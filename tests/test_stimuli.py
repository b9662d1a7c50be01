"""Stimulus sets: contract, content properties, validation, provenance checks."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from probekit import stimuli as S
from probekit.hashing import frame_hash

ROOT = Path(__file__).resolve().parents[1]
STIM = ROOT / "stimuli"
SHIPPED = ["items", "relations", "relations_eats", "analogies", "buried"]
MIN_CLASS = 0.30


@pytest.fixture(scope="module")
def sets():
    return {n: S.load(n) for n in S.names()}


def _words(t):
    return [t] if isinstance(t, str) else list(t)


# ------------------------------------------------------------------ contract
def test_names():
    assert S.names() == SHIPPED
    with pytest.raises(KeyError, match="unknown stimulus set"):
        S.load("nope")


@pytest.mark.parametrize("name", SHIPPED)
def test_contract(sets, name):
    df = sets[name]
    a = df.attrs
    for k in ("name", "version", "hash", "pooling", "description", "labels"):
        assert k in a, k
    assert a["name"] == name
    assert re.fullmatch(r"\d+\.\d+\.\d+", a["version"])
    assert a["hash"] == frame_hash(df, sorted(df.columns))
    assert a["pooling"] in ("target_mean", "last_token")
    for c in ("text", "target", "group"):
        assert c in df.columns
    assert df["group"].map(lambda g: isinstance(g, str)).all()
    assert df["text"].map(lambda t: isinstance(t, str) and t.strip() != "").all()
    for col, spec in a["labels"].items():
        assert spec["kind"] in ("binary", "continuous")
        assert spec["role"] in ("semantic", "surface", "control")
        assert spec.get("group", "group") in df.columns
        for k in ("scale", "description", "provenance"):
            assert spec[k], (col, k)
        if spec["kind"] == "binary":
            assert df[col].dtype == np.int64
            assert set(df[col].unique()) <= {0, 1}
            assert min(df[col].mean(), 1 - df[col].mean()) >= MIN_CLASS, col
        else:
            assert df[col].dtype == np.float64
            lo, hi = spec["range"]
            assert df[col].between(lo, hi).all(), col
        if spec["role"] == "semantic":
            assert "not human-normed" in spec["provenance"] and "LLM assistance" in spec["provenance"]
        assert not df[col].isna().any(), f"{name}.{col} has NaN but no label is optional"
        assert df.loc[df[col].notna(), spec.get("group", "group")].nunique() >= 12
    S.validate(df)


@pytest.mark.parametrize("name", SHIPPED)
def test_targets_are_whole_words(sets, name):
    df = sets[name]
    for text, target in zip(df.text, df.target):
        for w in _words(target):
            assert re.search(r"(?<!\w)" + re.escape(w) + r"(?!\w)", text), (text, w)


@pytest.mark.parametrize("name", SHIPPED)
def test_no_duplicates(sets, name):
    df = sets[name]
    assert not df.text.duplicated().any()


def test_sizes(sets):
    assert len(sets["items"]) >= 200
    assert len(sets["relations"]) >= 200
    assert len(sets["relations_eats"]) >= 200
    assert len(sets["analogies"]) >= 200
    b = sets["buried"]
    early, end = b[b.placement == "early"], b[b.placement == "end"]
    assert len(early) >= 200
    assert sorted(early.target) == sorted(end.target)


# ------------------------------------------------------------------ articles
@pytest.mark.parametrize("word,art", [
    ("hour", "an"), ("hourglass", "an"), ("honest", "an"), ("heir", "an"), ("honour", "an"),
    ("unicorn", "a"), ("uniform", "a"), ("unicycle", "a"), ("ukulele", "a"), ("university", "a"),
    ("eucalyptus", "a"), ("ewe", "a"), ("one", "a"), ("european", "a"),
    ("umbrella", "an"), ("umpire", "an"), ("unimportant", "an"), ("apple", "an"), ("island", "an"),
    ("orca", "an"), ("banana", "a"), ("house", "a"), ("yacht", "a"),
])
def test_article_exceptions(word, art):
    assert S.indefinite_article(word) == art


def test_items_articles(sets):
    df = sets["items"]
    for text, noun in zip(df.text, df.target):
        assert text == S.with_article(noun)
        assert S.article_errors(text) == []
    assert "An hourglass" in set(df.text) and "A unicycle" in set(df.text) and "An heir" in set(df.text)
    assert "A ukulele" in set(df.text) and "An umbrella" in set(df.text) and "A eucalyptus" in set(df.text)


def test_article_errors_detected():
    assert S.article_errors("A apple") == [("A apple", "an")]
    assert S.article_errors("An unicycle and a hour") == [("An unicycle", "a"), ("a hour", "an")]
    assert S.article_errors("I kept thinking about an hourglass.") == []


# ------------------------------------------------------------------ items
def test_items_design(sets):
    df = sets["items"]
    labels = df.attrs["labels"]
    binary = [c for c, s in labels.items() if s["kind"] == "binary" and s["role"] == "semantic"]
    cont = [c for c, s in labels.items() if s["kind"] == "continuous" and s["role"] == "semantic"]
    assert len(binary) >= 6 and len(cont) >= 3
    for c in cont:
        assert labels[c]["range"] == [1, 7]
    assert {"larger_than_person", "found_indoors", "holdable"} <= set(binary)
    assert labels["n_letters"]["role"] == "surface" and labels["zipf"]["role"] == "surface"
    # features are not copies of one another
    corr = df[binary].corr().abs()
    off = corr.where(~np.eye(len(binary), dtype=bool))
    assert off.max().max() < 0.9, off.max()
    assert (df.living != df.animal).sum() >= 40
    # a single noun per row, one row per noun
    assert df.target.map(lambda t: isinstance(t, str) and " " not in t).all()
    assert (df.group == df.target).all()
    assert (df.n_letters == df.target.str.len()).all()


def test_items_zipf_matches_wordfreq(sets):
    import wordfreq
    df = sets["items"].sample(40, random_state=0)
    for w, z in zip(df.target, df.zipf):
        assert round(wordfreq.zipf_frequency(w, "en"), 2) == pytest.approx(z)


# ------------------------------------------------------------------ relations
def test_relations_each_word_in_both_classes(sets):
    df = sets["relations"]
    assert df.related.mean() == 0.5
    for col in ("x", "y"):
        per = df.groupby(col).related.agg(["min", "max"])
        assert (per["min"] == 0).all() and (per["max"] == 1).all(), col
    assert (df.target.map(list) == df[["x", "y"]].values.tolist()).all()
    assert df.loc[df.related == 1, "relatedness"].min() >= 4
    assert df.loc[df.related == 0, "relatedness"].max() <= 3
    assert df.relatedness.nunique() >= 4


def _word_groups(df):
    owner = {}
    for g, t in zip(df.group, df.target):
        for w in _words(t):
            owner.setdefault(w.lower(), set()).add(g)
    return owner


@pytest.mark.parametrize("name", ["relations", "analogies"])
def test_no_word_in_two_groups(sets, name):
    owner = _word_groups(sets[name])
    shared = {w: g for w, g in owner.items() if len(g) > 1}
    assert not shared, shared
    assert sets[name].group.nunique() >= 12


def test_eats_design(sets):
    df = sets["relations_eats"]
    assert (df.group == df.animal).all()
    for col in ("animal", "food"):
        per = df.groupby(col).eats.agg(["min", "max"])
        assert (per["min"] == 0).all() and (per["max"] == 1).all(), per[(per["min"] == 1) | (per["max"] == 0)]
    assert not df[["animal", "food"]].duplicated().any()
    assert df.group.nunique() >= 12
    # the food alone is a poor predictor: per-food positive rate near the overall rate
    rate = df.groupby("food").eats.mean()
    assert rate.between(0.25, 0.75).all(), rate


# ------------------------------------------------------------------ analogies
def test_analogies_design(sets):
    df = sets["analogies"]
    assert df.relation_type.nunique() >= 5
    assert df.target.map(len).eq(4).all()
    assert (df.text == df.a + " is to " + df.b + " as " + df.c + " is to " + df.d).all()
    per_d = df.groupby("d").valid.agg(["min", "max"])
    assert (per_d["min"] == 0).all() and (per_d["max"] == 1).all()
    # D alone gives nothing away: every D is valid exactly as often as invalid
    assert (df.groupby("d").valid.mean() == 0.5).all()
    # groups are connected components of shared words (union-find) and there are >= 12
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for t in df.target:
        for w in t[1:]:
            parent[find(w.lower())] = find(t[0].lower())
    comp = df.target.map(lambda t: find(t[0].lower()))
    assert (df.groupby(comp).group.nunique() == 1).all()  # a component never spans groups
    assert comp.nunique() == df.group.nunique() >= 12


def test_group_kfold_six_folds(sets):
    from sklearn.model_selection import GroupKFold
    for name, df in sets.items():
        folds = list(GroupKFold(n_splits=6).split(df, groups=df.group))
        for tr, te in folds:
            assert not set(df.group.iloc[tr]) & set(df.group.iloc[te])
            for col, spec in df.attrs["labels"].items():
                if spec["kind"] == "binary":
                    assert df[col].iloc[tr].nunique() == 2, (name, col)


# ------------------------------------------------------------------ buried
def _build_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("probekit_stimuli_build", STIM / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_buried_design(sets):
    build = _build_module()
    df = sets["buried"]
    assert df.attrs["pooling"] == "last_token"
    assert set(df.placement) == {"early", "end"}
    assert len(build.FILLER_BANK) >= 40
    n_words = df.text.str.split().str.len()
    assert n_words.between(95, 120).all()
    early = df[df.placement == "early"].set_index("target")
    end = df[df.placement == "end"].set_index("target").loc[early.index]
    assert (early.filler_id == end.filler_id).all()
    concept = early.index.map(lambda w: build.CONCEPT_SENTENCE.format(np=S.with_article(w, capital=False)))
    assert all(e.startswith(c + " ") for e, c in zip(early.text, concept))
    assert all(t.endswith(" " + c) for t, c in zip(end.text, concept))
    assert [e[len(c) + 1:] for e, c in zip(early.text, concept)] == [t[:-len(c) - 1] for t, c in zip(end.text, concept)]
    assert early.filler_id.nunique() == len(early)
    # the filler never mentions any concept word of any set
    vocab = set()
    for d in sets.values():
        for t in d.target:
            vocab.update(w.lower() for w in _words(t))
    bank_words = set(re.findall(r"[a-z]+", " ".join(build.FILLER_BANK).lower()))
    assert not vocab & bank_words, vocab & bank_words
    for s in build.FILLER_BANK:
        assert S.article_errors(s) == []
    # buried labels are the items' labels
    items = sets["items"].set_index("target")
    for lab in ("edible", "animal", "larger_than_person"):
        assert (early[lab] == items.loc[early.index, lab]).all()


def test_buried_filler_alone_is_at_chance(sets):
    """A bag-of-words probe on the filler alone (concept sentence removed) stays at chance."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    df = sets["buried"]
    early = df[df.placement == "early"]
    filler = early.text.str.split(". ", n=1, regex=False).str[1]
    assert not any(w in f.split() for w, f in zip(early.target, filler))
    n = len(early)
    bound = 0.5 + 3 * math.sqrt(0.25 / n)  # chance + 3 binomial SDs
    for lab in df.attrs["labels"]:
        if df.attrs["labels"][lab]["kind"] != "binary":
            continue
        y = early[lab].values
        pipe = make_pipeline(CountVectorizer(), LogisticRegression(C=1.0, solver="liblinear", class_weight="balanced"))
        pred = cross_val_predict(pipe, filler, y, groups=early.group, cv=GroupKFold(n_splits=6))
        bacc = balanced_accuracy_score(y, pred)
        print(f"filler-only probe {lab}: balanced accuracy {bacc:.3f} (bound {bound:.3f})")
        assert bacc < bound, (lab, bacc)


# ------------------------------------------------------------------ validation reports everything
def _good_frame():
    df = pd.DataFrame({
        "text": [f"A {w}" if S.indefinite_article(w) == "a" else f"An {w}" for w in
                 ["cat", "dog", "apple", "car", "house", "pear", "hat", "owl", "ship", "bus", "cow", "fig"]],
        "group": [f"g{i}" for i in range(12)],
        "animal": [1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0],
        "size": [3.0, 3, 2, 5, 6, 2, 2, 3, 7, 6, 5, 2],
    })
    df["target"] = df.text.str.split().str[1]
    df.attrs.update(name="toy", labels={
        "animal": {"kind": "binary", "role": "semantic", "scale": "0/1", "description": "", "provenance": ""},
        "size": {"kind": "continuous", "role": "semantic", "range": [1, 7], "scale": "1-7",
                 "description": "", "provenance": ""}})
    return df


def test_validate_good_frame():
    S.validate(_good_frame())


def test_validate_reports_all_bad_rows_at_once():
    df = _good_frame()
    df.loc[0, "text"] = ""                 # empty text
    df.loc[2, "text"] = "A apple"          # wrong article
    df.loc[3, "target"] = "truck"          # target missing from text
    df.loc[4, "size"] = 9.0                # outside scale
    df.loc[5, "animal"] = np.nan           # NaN in a required label
    df.loc[6, "text"] = "A dog"            # duplicate of row 1 ...
    df.loc[6, "target"] = "dog"
    df.loc[7, "animal"] = 2                # not binary
    df.loc[8, "target"] = "hip"            # substring, not a whole word ("ship")
    with pytest.raises(S.StimulusError) as ei:
        S.validate(df)
    err = ei.value
    assert isinstance(err, ValueError)
    rows = {p.row for p in err.problems}
    assert {0, 2, 3, 4, 5, 6, 7, 8} <= rows, str(err)
    msg = str(err)
    for needle in ("empty", "'an'", "'truck'", "outside its scale", "NaN", "duplicate", "not 0 or 1", "'hip'"):
        assert needle in msg, needle
    # every problem says what to do
    assert all(p.fix for p in err.problems)
    print(msg)


def test_validate_set_level_problems():
    df = _good_frame()
    df["group"] = ["g0", "g1", "g2"] * 4           # too few groups for 6 folds
    df["animal"] = [1] + [0] * 11                     # imbalance
    with pytest.raises(S.StimulusError) as ei:
        S.validate(df)
    msg = str(ei.value)
    assert "6-fold" in msg and "imbalance" in msg


def test_validate_optional_labels_accept_nan():
    df = _good_frame()
    df.loc[3, "size"] = np.nan
    with pytest.raises(S.StimulusError, match="NaN"):
        S.validate(df)
    df.attrs["labels"]["size"]["optional"] = True
    S.validate(df)


def test_validate_word_in_two_groups(sets):
    df = sets["analogies"].copy()
    df.attrs = dict(sets["analogies"].attrs)
    i = df.index[df.group != df.group.iloc[0]][0]
    a, b, c, _ = df.loc[0, "target"]
    d = df.loc[i, "target"][3]
    df.at[0, "text"] = f"{a} is to {b} as {c} is to {d}"   # borrow a D word from another family
    df.at[0, "target"] = [a, b, c, d]
    with pytest.raises(S.StimulusError, match="two CV groups"):
        S.validate(df)


def test_validate_missing_columns():
    with pytest.raises(S.StimulusError, match="required column 'group'"):
        S.validate(pd.DataFrame({"text": ["A cat"], "target": ["cat"]}))


# ------------------------------------------------------------------ files, hashes, versions
@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_load_file_round_trip(sets, tmp_path, name, suffix):
    df = sets[name]
    p = S.save(df, tmp_path / f"{name}{suffix}")
    back = S.load_file(p)
    assert back.attrs["hash"] == df.attrs["hash"]
    assert back.attrs["version"] == df.attrs["version"]
    assert back.attrs["labels"] == df.attrs["labels"]
    pd.testing.assert_frame_equal(back, df)


def test_load_file_without_sidecar_needs_labels(tmp_path):
    p = tmp_path / "mine.csv"
    _good_frame().to_csv(p, index=False)
    with pytest.raises(S.StimulusError, match="no labels declared"):
        S.load_file(p)


def test_hash_changes_with_text(sets):
    df = sets["items"].copy()
    h = S.content_hash(df)
    df.loc[df.index[0], "text"] = df.text.iloc[0] + "s"
    assert S.content_hash(df) != h


def test_edited_csv_without_new_hash_is_refused(tmp_path):
    shutil.copy(STIM / "items.csv", tmp_path / "items.csv")
    shutil.copy(STIM / "items.json", tmp_path / "items.json")
    p = tmp_path / "items.csv"
    p.write_text(p.read_text().replace("An elephant,", "An elephant,", 1).replace(",6.0,5.0,5.0,", ",6.0,5.0,4.0,", 1))
    with pytest.raises(S.StimulusError, match="hash"):
        S.load_file(p)


@pytest.mark.parametrize("name", SHIPPED)
def test_sidecar_matches(name):
    meta = json.loads((STIM / f"{name}.json").read_text())
    assert meta["name"] == name and meta["n_rows"] == len(S.load(name))
    assert meta["hash"] == S.load(name).attrs["hash"]


def test_committed_data_equal_build_output(tmp_path):
    subprocess.run([sys.executable, str(STIM / "build.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True, text=True)
    for name in SHIPPED:
        for ext in (".csv", ".json"):
            built = (tmp_path / f"{name}{ext}").read_bytes()
            committed = (STIM / f"{name}{ext}").read_bytes()
            assert built == committed, f"stimuli/{name}{ext} differs from stimuli/build.py output: rerun it"


# ------------------------------------------------------------------ WordNet cross-check
WORDNET_MAX_RATE = 0.10   # per feature: disagreements / items


def test_wordnet_cross_check(sets):
    try:
        wn = S.WordNetNouns()
    except FileNotFoundError as e:
        pytest.skip(f"{e} (WordNet 3.0 files: `apt-get install wordnet-base`; CI installs it)")
    df = sets["items"]
    dis = S.wordnet_disagreements(df, wn)
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.max_colwidth", 70):
        print("\nWordNet disagreements:\n" + dis.to_string())
    for f in S.WORDNET_CATEGORIES:
        rate = (dis.feature == f).sum() / len(df)
        print(f"{f}: {rate:.1%}")
        assert rate <= WORDNET_MAX_RATE, (f, dis[dis.feature == f])
    # strong disagreements (we say yes, WordNet has no such sense) are rare
    strong = dis[(dis.ours == 1) & (dis.wordnet == 0)]
    assert len(strong) <= 0.03 * len(df) * len(S.WORDNET_CATEGORIES), strong
