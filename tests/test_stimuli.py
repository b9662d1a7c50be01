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

from probekit.stimuli import sets as S

ROOT = Path(__file__).resolve().parents[1]
STIM = ROOT / "probekit" / "studies" / "bogdan2025" / "stimuli"
SHIPPED = ["items", "items_heldout", "senses", "relations", "relations_eats", "analogies", "analogy_pairs", "buried"]
MIN_CLASS = 0.30


@pytest.fixture(scope="module")
def sets():
    return {n: S.load(n) for n in S.names()}


def _words(t):
    return [t] if isinstance(t, str) else list(t)


# ------------------------------------------------------------------ contract
def test_names():
    assert S.names() == sorted(SHIPPED)            # found on disk, in name order
    with pytest.raises(KeyError, match="unknown stimulus set"):
        S.load("nope")


@pytest.mark.parametrize("name", SHIPPED)
def test_contract(sets, name):
    """What a shipped set promises beyond what ``load`` already enforces through ``validate`` (required
    columns, label kinds/roles/group columns, pooling, whole-word targets, the content hash): a
    version, documented labels, 0/1 int binary labels with both classes well represented, continuous
    labels inside their declared range, no missing label values and >= 12 CV groups per label."""
    df = sets[name]
    a = df.attrs
    for k in ("version", "pooling", "description", "labels"):
        assert k in a, k
    assert re.fullmatch(r"\d+\.\d+\.\d+", a["version"])
    assert df["group"].map(lambda g: isinstance(g, str)).all()
    for col, spec in a["labels"].items():
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


@pytest.mark.parametrize("name", SHIPPED)
def test_no_duplicates(sets, name):
    df = sets[name]
    if df.attrs["checks"].get("unique_text", True):
        assert not df.text.duplicated().any()
    else:  # analogy_pairs: a text recurs, but never twice within one analogy/pair slot
        assert not df[["analogy", "pair"]].duplicated().any()


def test_sizes(sets):
    assert len(sets["items"]) >= 200
    assert len(sets["relations"]) >= 200
    assert len(sets["relations_eats"]) >= 200
    assert len(sets["analogies"]) >= 200
    assert 80 <= len(sets["items_heldout"]) <= 130
    assert len(sets["senses"]) >= 120
    b = sets["buried"]
    early, end = b[b.placement == "early"], b[b.placement == "end"]
    assert len(early) >= 200
    assert sorted(early.target) == sorted(end.target)


# ------------------------------------------------------------------ v3: sizes and the v2 guarantees
# Sizes decided by the power analysis (benchmarks/calibration/power_n.py, docs/power_n.md), issue 19.
def test_v3_sizes(sets):
    rel, an = sets["relations"], sets["analogies"]
    assert rel.group.nunique() >= 100 and len(rel) >= 400
    assert an.group.nunique() >= 30
    assert an.ab_relation.nunique() >= 12
    prim = an[an.invalid_kind != "wrong_d"]
    assert len(prim) >= 800 and prim.group.nunique() >= 30
    assert len(sets["analogy_pairs"]) == 2 * len(an)


def _experiment_frames(sets):
    """Every shipped experiment's rows as the pipeline probes them (its query applied)."""
    from probekit.studies.bogdan2025.experiments import EXPERIMENTS
    for exp in EXPERIMENTS.values():
        df = sets[exp.stimulus_set]
        yield exp.name, (df.query(exp.query) if exp.query else df), df.attrs["labels"]


def test_v2_guarantees_on_every_experiment(sets):
    """On the rows each experiment probes: every binary label has a minority class >= 30% and >= 12 CV
    groups (per class too), and the primary labels of the item sets correlate at most |r| = 0.75 (as
    documented, to 2 d.p.: items_heldout's living vs animal is 0.752)."""
    for name, df, labels in _experiment_frames(sets):
        for lab, spec in labels.items():
            g = df[spec.get("group", "group")]
            assert g.nunique() >= 12, (name, lab, g.nunique())
            if spec["kind"] == "binary":
                share = df[lab].mean()
                assert min(share, 1 - share) >= MIN_CLASS, (name, lab, share)
                assert (df.groupby(lab)[spec.get("group", "group")].nunique() >= 12).all(), (name, lab)
    for name in ("items", "items_heldout"):
        df = sets[name]
        prim = [c for c, s in df.attrs["labels"].items() if s["kind"] == "binary" and s["role"] == "semantic"
                and c != "larger_than_person"]
        corr = df[prim].corr().abs().where(~np.eye(len(prim), dtype=bool))
        assert round(corr.max().max(), 2) <= 0.75, (name, corr.max().max())


@pytest.mark.slow
@pytest.mark.parametrize("embedded_name", ["smollm2-135m", "gemma3-270m"])
def test_pair_only_baselines_at_chance_on_embedded_models(embedded_name):
    """The A:B-only and C:D-only profiles of the primary analogies condition are at chance on the real
    models, at every layer: the same pair text carries both labels equally often, so no pair
    representation can predict validity. Bound: chance + 3.5 binomial SEs of balanced accuracy at the
    experiment's n (a bound from n alone, not from any model's result)."""
    import probekit
    from probekit.models.loading import ModelUnavailableError, load_model
    from probekit.pipeline import probe_experiment
    from probekit.studies.bogdan2025.experiments import EXPERIMENTS
    try:
        model = load_model(embedded_name)
    except ModelUnavailableError as exc:
        pytest.skip(str(exc))
    for exp_name in ("analogies_ab_only", "analogies_cd_only"):
        exp = EXPERIMENTS[exp_name]
        stim = exp.stimuli()
        acts = probekit.extract(model, stim, store=True)
        res = probe_experiment(acts, exp, probe_kw=dict(n_permutations=0, n_bootstrap=0, control_task=False),
                               cache=False)
        ba = res.profile("valid", "resid_pre", "balanced_accuracy").value.to_numpy()
        bound = 0.5 + 3.5 * 0.5 / math.sqrt(len(stim))
        print(f"\n{embedded_name} {exp_name}: n={len(stim)}, max BA {ba.max():.3f} (bound {bound:.3f})")
        assert np.nanmax(ba) <= bound, (embedded_name, exp_name, np.round(ba, 3))


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
    assert {"larger_than_person", "found_indoors"} <= set(binary) and "holdable" not in df.columns
    assert labels["n_letters"]["role"] == "surface" and labels["zipf"]["role"] == "surface"
    # primary (binary semantic) features are not copies of one another (issue 11: |r| <= 0.8)
    corr = df[binary].corr().abs()
    off = corr.where(~np.eye(len(binary), dtype=bool))
    assert off.max().max() <= 0.8, off.max()
    # larger_than_person is the documented derivation of the size rating, not a second rating
    assert (df.larger_than_person == (df["size"] >= 5)).all()
    # homographs whose senses differ in the labels are excluded
    assert not {"kiwi", "mouse"} & set(df.target)
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
    # the 1-7 rating is metadata in v2 (r = 0.977 with 'related'), not a label
    assert "relatedness" not in df.attrs["labels"]
    assert df.loc[df.related == 1, "relatedness_rating"].min() >= 4
    assert df.loc[df.related == 0, "relatedness_rating"].max() <= 3


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
    assert not df[["animal", "food"]].duplicated().any()
    # neither word alone predicts the label: every animal and every food is exactly 50/50
    assert (df.groupby("animal").eats.mean() == 0.5).all()
    assert (df.groupby("food").eats.mean() == 0.5).all()
    # the label is the diet-class match, and every class has many animals (so it can transfer)
    match = {("carnivore", "meat"), ("herbivore", "plants")}
    assert (df.eats == [int((d, f) in match) for d, f in zip(df.diet, df.food_class)]).all()
    per_class = df.groupby("diet").animal.nunique()
    assert (per_class >= 15).all(), per_class
    # every animal is paired with every food (no hand-picked cells)
    assert len(df) == df.animal.nunique() * df.food.nunique()
    assert not (df.animal + "s" == df.food).any() and "mice" not in set(df.food)


# ------------------------------------------------------------------ analogies
def test_analogies_design(sets):
    df = sets["analogies"]
    assert df.ab_relation.nunique() >= 7
    assert df.target.map(len).eq(4).all()
    assert (df.text == df.a + " is to " + df.b + " as " + df.c + " is to " + df.d).all()
    assert set(df.invalid_kind) == {"none", "cross_relation", "wrong_d"}
    assert ((df.invalid_kind == "none") == (df.valid == 1)).all()
    # issue 11: at least 40% of invalid analogies keep C:D a canonical pair
    inv = df[df.valid == 0]
    assert (inv.cd_relation != "none").mean() >= 0.4
    # canonical pairs: every (a, b) and every canonical (c, d) is one of the build's pairs, of its type
    build = _build_module()
    pairs = {tuple(p.split(":")): t for t, fams in build.ANALOGY_FAMILIES.items() for f in fams for p in f.split()}
    assert all(pairs[(a, b)] == r for a, b, r in zip(df.a, df.b, df.ab_relation))
    for c, d, r in zip(df.c, df.d, df.cd_relation):
        assert pairs.get((c, d), "none") == r
    assert ((df.ab_relation == df.cd_relation) == (df.valid == 1)).all()
    # primary condition: each relation type, and each single pair, is 50/50 valid in A:B and in C:D
    prim = df[df.invalid_kind != "wrong_d"]
    for col in ("ab_relation", "cd_relation"):
        assert (prim.groupby(col).valid.mean() == 0.5).all(), col
    assert (prim.groupby(["a", "b"]).valid.mean() == 0.5).all()
    assert (prim.groupby(["c", "d"]).valid.mean() == 0.5).all()
    assert (prim.groupby("group").valid.mean() == 0.5).all()
    # secondary condition (v1 kind): D alone gives nothing away either
    sec = df[df.invalid_kind != "cross_relation"]
    assert sec.groupby("d").valid.agg(["min", "max"]).eq([0, 1]).all().all()
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


def test_analogy_shortcut_baselines_at_chance(sets):
    """From the data alone: one pair's relation type or words predict nothing in the primary condition,
    while C:D's type gives the v1-style (wrong_d) condition away; 'same relation' is the positive control."""
    df = sets["analogies"]
    prim = S.pair_shortcut_baselines(df[df.invalid_kind != "wrong_d"]).set_index("features").balanced_accuracy
    sec = S.pair_shortcut_baselines(df[df.invalid_kind != "cross_relation"]).set_index("features").balanced_accuracy
    print("\nprimary (valid vs cross_relation):\n" + prim.round(3).to_string())
    print("secondary (valid vs wrong_d):\n" + sec.round(3).to_string())
    for f in ("ab_relation", "cd_relation", "ab_relation+cd_relation", "ab_words", "cd_words"):
        assert abs(prim[f] - 0.5) <= 0.05, (f, prim[f])
    assert prim["same_relation (control)"] == 1.0
    assert sec["cd_relation"] >= 0.95 and abs(sec["ab_relation"] - 0.5) <= 0.05


def test_analogy_pairs_match_analogies(sets):
    an, pr = sets["analogies"], sets["analogy_pairs"]
    assert len(pr) == 2 * len(an)
    assert pr.attrs["labels"]["valid"]["role"] == "control"
    for pair, x, y in (("ab", "a", "b"), ("cd", "c", "d")):
        sub = pr[pr.pair == pair].reset_index(drop=True)
        assert (sub.x == an[x]).all() and (sub.y == an[y]).all()
        assert (sub.valid == an.valid).all() and (sub.group == an.group).all()
        assert (sub.invalid_kind == an.invalid_kind).all()
        assert (sub.text == [S.with_article(a) + " and " + b for a, b in zip(sub.x, sub.y)]).all()
        # primary condition: the very same pair text is valid exactly as often as invalid
        prim = sub[sub.invalid_kind != "wrong_d"]
        assert (prim.groupby("text").valid.mean() == 0.5).all()


# ------------------------------------------------------------------ senses (off-ceiling, context-decided)
def test_senses_design(sets):
    df = sets["senses"]
    assert (df.group == df.target).all() and df.target.nunique() >= 30
    # every noun: two contexts per sense, so the noun alone is exactly at chance
    per = df.groupby("target").animal_sense.agg(["mean", "size"])
    assert (per["mean"] == 0.5).all() and (per["size"] == 4).all()
    # the noun is the last word, preceded by article + one modifier
    assert (df.text == [S.with_article(m) + " " + t for m, t in zip(df.modifier, df.target)]).all()
    assert ((df.sense == "animal") == (df.animal_sense == 1)).all()
    # a modifier decides only one sense of one noun
    assert not df[["modifier", "target"]].duplicated().any()


# ------------------------------------------------------------------ held-out nouns
def _lemmas(words):
    out = set()
    for w in words:
        w = w.lower()
        out |= {w, w[:-1] if w.endswith("s") else w, w[:-2] if w.endswith("es") else w}
    return out


def test_heldout_disjoint_and_same_rules(sets):
    items, ho = sets["items"], sets["items_heldout"]
    assert not _lemmas(items.target) & _lemmas(ho.target)
    # no held-out noun is a compound containing an items noun of 4+ letters (sailboat/boat)
    long_items = [w for w in items.target if len(w) >= 4]
    not_compounds = {("dandelion", "lion"), ("plumber", "plum")}   # substrings, not compounds
    comp = [(h, w) for h in ho.target for w in long_items if w in h and w != h and (h, w) not in not_compounds]
    assert not comp, comp
    # the same written rules: identical label declarations (kind, scale, description)
    for lab, spec in items.attrs["labels"].items():
        h = ho.attrs["labels"][lab]
        assert (h["kind"], h["scale"], h["description"]) == (spec["kind"], spec["scale"], spec["description"]), lab
    assert (ho.larger_than_person == (ho["size"] >= 5)).all()
    assert set(ho.category) <= set(items.category)


# ------------------------------------------------------------------ build log
def test_build_log_records_every_change(sets):
    build = _build_module()
    log = pd.read_csv(STIM / "build_log.csv", dtype=str, keep_default_na=False)
    items = sets["items"].set_index("target")
    for noun, col, new, why in build.ITEM_CORRECTIONS:
        row = log[(log.row == noun) & (log.column == col)]
        assert len(row) == 1 and row.reason.iloc[0] == why, (noun, col)
        assert float(items.loc[noun, col]) == float(new)
    for noun in build.ITEM_EXCLUDED:
        assert ((log.row == noun) & (log.new == "removed")).sum() == 1
        assert noun not in items.index
    for col in build.ITEM_DROPPED:
        assert ((log.column == col) & (log.new == "dropped")).sum() == 1
    assert (log.reason.str.len() > 10).all()


def test_probe_folds_work_on_every_set(sets):
    """The probes' own split plans (6-fold stratified group CV, as ``probe_grid`` builds them) exist for
    every label of every shipped set: groups never straddle train and test, and every binary label has
    both classes in every training fold and every test fold (else its accuracy is undefined or trivial)."""
    from probekit.probes.design import grid_columns
    for name, df in sets.items():
        gc = grid_columns(df, n_splits=6, seed=0, n_permutations=0, control_task=False)
        assert sorted(l for p in gc.plans for l in p.labels) == sorted(df.attrs["labels"]), name
        for plan in gc.plans:
            groups = df[gc.specs[plan.labels[0]].group].to_numpy()[plan.rows]
            assert len(plan.folds) == 6
            assert sorted(np.concatenate([te for _, te in plan.folds]).tolist()) == list(range(len(plan.rows)))
            for tr, te in plan.folds:
                assert not set(groups[tr]) & set(groups[te]), name
                for col in plan.labels:
                    if gc.specs[col].kind == "binary":
                        y = gc.Y[col].to_numpy()[plan.rows]
                        assert len(set(y[tr])) == 2 and len(set(y[te])) == 2, (name, col)


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


def test_validate_lists_a_non_number_in_a_binary_label_instead_of_crashing():
    """A frame given to validate() directly (load_file checks label types first): a binary label holding a
    string was a ValueError from the class-balance check; now it is one listed problem among the others."""
    df = _good_frame()
    df["animal"] = df["animal"].astype(object)
    df.loc[3, "animal"] = "yes"
    df.loc[4, "size"] = 9.0
    with pytest.raises(S.StimulusError) as ei:
        S.validate(df)
    msg = str(ei.value)
    assert "label value 'yes' is not a number" in msg and "outside its scale" in msg


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


def test_validate_label_declarations():
    """Bad declarations in the sidecar (what test_contract no longer re-checks on the shipped sets):
    every one is reported, naming the label."""
    df = _good_frame()
    df.attrs["pooling"] = "max"
    df.attrs["labels"] = dict(df.attrs["labels"],
                              animal=dict(df.attrs["labels"]["animal"], kind="ordinal", role="decoration",
                                          group="word"),
                              size={k: v for k, v in df.attrs["labels"]["size"].items() if k != "range"},
                              colour={"kind": "binary"})
    with pytest.raises(S.StimulusError) as ei:
        S.validate(df)
    problems = {(p.word, p.what) for p in ei.value.problems}
    assert ("pooling", "unknown pooling 'max'") in problems
    assert ("animal", "label kind 'ordinal' is not one of ('binary', 'continuous')") in problems
    assert ("animal", "label role 'decoration' is not one of ('semantic', 'surface', 'control')") in problems
    assert ("animal", "label's CV group column 'word' is missing") in problems
    assert ("size", "continuous label has no 'range'") in problems
    assert ("colour", "declared label column 'colour' is missing") in problems


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


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_save_is_atomic(sets, tmp_path, monkeypatch, suffix):
    """A write that dies half-way leaves the previous file and sidecar, readable, and no stray files."""
    df = sets["items"]
    p = S.save(df, tmp_path / f"items{suffix}")
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    writer = "to_csv" if suffix == ".csv" else "to_parquet"

    def dies(self, path, *args, **kwargs):
        Path(path).write_text("half a file")
        raise OSError("disk full")
    monkeypatch.setattr(pd.DataFrame, writer, dies)
    with pytest.raises(OSError, match="disk full"):
        S.save(sets["relations"], p)
    monkeypatch.undo()
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before
    pd.testing.assert_frame_equal(S.load_file(p), df)


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
    text = p.read_text()
    edited = text.replace("\nAn elephant,elephant,elephant,animal,1,1,0,0,1,0,6.0,7.0,5.0,",
                          "\nAn elephant,elephant,elephant,animal,1,1,0,0,1,0,6.0,7.0,4.0,", 1)
    assert edited != text
    p.write_text(edited)
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
    files = [f"{name}{ext}" for name in SHIPPED for ext in (".csv", ".json")] + ["build_log.csv"]
    for f in files:
        built = (tmp_path / f).read_bytes()
        committed = (STIM / f).read_bytes()
        assert built == committed, f"stimuli/{f} differs from stimuli/build.py output: rerun it"


# ------------------------------------------------------------------ WordNet cross-check
WORDNET_MAX_RATE = 0.10   # per feature: disagreements / items


@pytest.mark.parametrize("name", ["items", "items_heldout"])
def test_wordnet_cross_check(sets, name):
    try:
        wn = S.WordNetNouns()
    except FileNotFoundError as e:
        pytest.skip(f"{e} (WordNet 3.0 files: `apt-get install wordnet-base`; CI installs it)")
    df = sets[name]
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


def test_a_target_in_another_unicode_normal_form_is_named_as_such():
    import unicodedata

    from probekit.core.text import TargetNotFoundError, missing_word_advice, target_spans
    text = unicodedata.normalize("NFD", "A café")
    word = unicodedata.normalize("NFC", "café")
    assert text != "A café" and word in unicodedata.normalize("NFC", text)
    advice = missing_word_advice(text, word)
    assert "normal form" in advice and "NFD" in advice and "NFC" in advice
    with pytest.raises(TargetNotFoundError, match="normal form"):
        target_spans(text, word)
    assert "spelling" in missing_word_advice("A cafe", "tea")
