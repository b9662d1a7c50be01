#!/usr/bin/env python
"""Build the shipped stimulus sets deterministically.

    python stimuli/build.py            # (re)write stimuli/<name>.csv + .json
    python stimuli/build.py --out DIR  # write elsewhere (the tests compare DIR with stimuli/)

Hand-authored word tables live in this file and in ``source/items_table.txt``;
everything else (texts, articles, surface controls, filler passages, hashes) is
derived here. The committed CSV/JSON files must equal this script's output
(tests/test_stimuli.py checks it). Change the data => bump that set's VERSION.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[3]))   # the checkout holding probekit/

from probekit.stimuli.sets import save, with_article  # noqa: E402

DATE = "2026-11-25"
PROVENANCE = (f"authored by the probekit developers with LLM assistance, {DATE}; not human-normed")
VERSIONS = {"items": "2.0.0", "items_heldout": "1.0.0", "senses": "1.0.0", "relations": "3.0.0",
            "relations_eats": "2.0.0", "analogies": "3.0.0", "analogy_pairs": "2.0.0", "buried": "2.0.0"}
SEED = 20250113  # filler assembly
RATING_SCALE = "1-7 Likert-style rating, 1 = lowest, 7 = highest (see stimuli/README.md for anchors)"


def _zipf(word: str) -> float:
    from wordfreq import zipf_frequency
    return float(round(zipf_frequency(word, "en"), 2))


def _surface_labels(what: str) -> dict:
    from importlib.metadata import version
    wf = version("wordfreq")
    return {
        "n_letters": {"kind": "continuous", "role": "surface", "group": "group", "range": [1, 40],
                      "scale": "number of letters", "description": f"letters in {what}",
                      "provenance": "computed: len(word)"},
        "zipf": {"kind": "continuous", "role": "surface", "group": "group", "range": [0, 8],
                 "scale": "Zipf frequency (log10 per billion words + 3), 0 = unseen",
                 "description": f"corpus frequency of {what}",
                 "provenance": f"computed: wordfreq {wf} zipf_frequency(word, 'en'), rounded to 2 d.p."},
    }


# =========================================================================== Exp 1: items
# Written rules, applied the same way to every row of items AND items_heldout.
ITEM_BINARY = {
    "living": "is a whole living organism (animal, person, plant or fungus) in its usual form; "
              "harvested fruit/vegetables/nuts/eggs count as not living",
    "animal": "is a (non-human) animal",
    "edible": "it (for animals: its meat) is commercially farmed, fished, hunted or grown as food for people in "
              "Europe or North America and sold there as ordinary food (livestock, poultry, game such as deer, "
              "elk, moose and bison, fish, shellfish, fruit, vegetables, nuts, prepared foods); animals eaten only "
              "regionally elsewhere (kangaroo, crocodile, dog) or as imports (frog legs) count as 0",
    "man_made": "is made by people (artifacts, buildings, vehicles and prepared foods)",
    "larger_than_person": "derived, not rated separately: size rating >= 5 (a typical one is bigger than an adult "
                          "person); kept as the binary size split used by the buried experiment",
    "found_indoors": "is typically found inside a home or other building (people: works mostly indoors; "
                     "animals: kept as a house pet or a household pest)",
}
ITEM_CONT = {
    "size": "typical size; anchors 1 = fits on a fingertip, 2 = fits in a palm, 3 = carried in the arms, "
            "4 = roughly child-to-person size, 5 = bigger than a person / room size, 6 = house size, "
            "7 = larger than a house (landscape scale)",
    "danger": "how dangerous it is to people by direct harm (attack, bite, sting, accident; disease transmission "
              "not counted); 1 = harmless, 3 = painful but minor injury, 4 = can injure seriously if mishandled, "
              "5 = serious injuries are common, 6 = can kill, fatal incidents are rare, 7 = kills people "
              "regularly (recurrent fatal attacks/accidents worldwide)",
    "pleasantness": "how pleasant it is to most people; 1 = very unpleasant, 4 = neutral, 7 = very pleasant",
}
#: v1 columns dropped in v2 (kept in source/items_table.txt for the record).
ITEM_DROPPED = {"holdable": "redundant with size: holdable = 1 for 100% of size <= 2 and 2% of size >= 4 "
                            "(r = -0.79); the size rating carries it"}
#: Rows of the v1 table removed in v2: homographs whose senses differ in the labels.
ITEM_EXCLUDED = {
    "kiwi": "homograph: bird (animal = 1, living = 1) / fruit (edible = 1); the v1 row labelled the fruit",
    "mouse": "homograph: animal / computer device (both very frequent); moved to the 'senses' set, where the "
             "context decides the sense",
}
#: Label corrections of v2: (noun, column, new value, reason). Each is logged in stimuli/build_log.csv.
_EDIBLE_RULE = "edible rule v2 (farmed/hunted/fished for food in Europe or North America)"
ITEM_CORRECTIONS = [
    ("buffalo", "edible", 1, _EDIBLE_RULE + ": bison/buffalo meat is farmed and sold (cow = 1)"),
    ("bison", "edible", 1, _EDIBLE_RULE + ": farmed for meat in North America"),
    ("elk", "edible", 1, _EDIBLE_RULE + ": farmed and hunted game meat"),
    ("deer", "edible", 1, _EDIBLE_RULE + ": venison, farmed and hunted game meat"),
    ("moose", "edible", 1, _EDIBLE_RULE + ": hunted game meat sold in Scandinavia and Canada"),
    ("ostrich", "edible", 1, _EDIBLE_RULE + ": farmed for meat in Europe and North America"),
    ("horse", "edible", 1, _EDIBLE_RULE + ": slaughtered for meat and sold in France, Belgium, Italy"),
    ("snail", "edible", 1, _EDIBLE_RULE + ": farmed for food in France and Italy (escargots)"),
    ("pigeon", "edible", 1, _EDIBLE_RULE + ": farmed for meat as squab (quail = 1)"),
    ("whale", "edible", 1, _EDIBLE_RULE + ": minke whale meat is hunted and sold in Norway and Iceland"),
    ("cheetah", "danger", 4.0, "danger anchors v2: no recurrent fatal attacks on people (leopard 7 has them)"),
    ("hippopotamus", "danger", 7.0, "danger anchors v2: kills people regularly (hundreds per year)"),
    ("elephant", "danger", 7.0, "danger anchors v2: kills people regularly (hundreds per year)"),
    ("wolf", "danger", 5.0, "danger anchors v2: fatal attacks are very rare; serious bites occur"),
]


def read_noun_table(path: Path, columns: list[str]) -> pd.DataFrame:
    cols = ["noun", "category", *columns, *ITEM_CONT]
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != len(cols):
            raise ValueError(f"{path.name}: bad line {line!r} (expected {len(cols)} fields: {' '.join(cols)})")
        rows.append(parts)
    t = pd.DataFrame(rows, columns=cols)
    for c in columns:
        t[c] = t[c].astype("int64")
    for c in ITEM_CONT:
        t[c] = t[c].astype("float64")
    if t.noun.duplicated().any():
        raise ValueError(f"{path.name}: duplicate nouns {sorted(t.noun[t.noun.duplicated()])}")
    return t


V1_ITEM_COLUMNS = ["living", "animal", "edible", "man_made", "larger_than_person", "found_indoors", "holdable"]
HELDOUT_COLUMNS = ["living", "animal", "edible", "man_made", "found_indoors"]


def read_items_table(log: list | None = None) -> pd.DataFrame:
    """The v1 table with the v2 rules applied; every change appended to ``log``."""
    t = read_noun_table(HERE / "source" / "items_table.txt", V1_ITEM_COLUMNS)
    log = log if log is not None else []
    for noun, why in ITEM_EXCLUDED.items():
        assert noun in set(t.noun), noun
        log.append({"set": "items", "row": noun, "column": "*", "old": "row", "new": "removed", "reason": why})
    t = t[~t.noun.isin(ITEM_EXCLUDED)].reset_index(drop=True)
    for noun, col, new, why in ITEM_CORRECTIONS:
        i = t.index[t.noun == noun]
        assert len(i) == 1, noun
        old = t.at[i[0], col]
        assert old != new, (noun, col, old)
        t.at[i[0], col] = new
        log.append({"set": "items", "row": noun, "column": col, "old": str(old), "new": str(new), "reason": why})
    for col, why in ITEM_DROPPED.items():
        log.append({"set": "items", "row": "*", "column": col, "old": "label", "new": "dropped", "reason": why})
        t = t.drop(columns=col)
    derived = (t["size"] >= 5).astype("int64")
    for noun, old, new in zip(t.noun, t.larger_than_person, derived):
        if old != new:
            log.append({"set": "items", "row": noun, "column": "larger_than_person", "old": str(old),
                        "new": str(new), "reason": "larger_than_person := size >= 5"})
    t["larger_than_person"] = derived
    return t


def _noun_set(t: pd.DataFrame, name: str, description: str, extra_prov: str = "") -> pd.DataFrame:
    df = pd.DataFrame({
        "text": [with_article(w) for w in t.noun],
        "target": list(t.noun),
        "group": list(t.noun),
        "category": list(t.category),
    })
    for c in [*ITEM_BINARY, *ITEM_CONT]:
        df[c] = t[c].values
    df["n_letters"] = t.noun.str.len().astype("float64").values
    df["zipf"] = [_zipf(w) for w in t.noun]
    prov = (PROVENANCE + "; rule-based: every row labelled by the written rule in 'description'"
            + extra_prov + "; cross-checked against WordNet 3.0 hypernyms where possible (tests/test_stimuli.py)")
    labels = {c: {"kind": "binary", "role": "semantic", "group": "group", "scale": "0 = no, 1 = yes",
                  "description": d, "provenance": prov} for c, d in ITEM_BINARY.items()}
    labels.update({c: {"kind": "continuous", "role": "semantic", "group": "group", "range": [1, 7],
                       "scale": RATING_SCALE, "description": d,
                       "provenance": PROVENANCE + "; single rater, anchors in 'description'" + extra_prov}
                   for c, d in ITEM_CONT.items()})
    labels.update(_surface_labels("the noun"))
    df.attrs.update(name=name, version=VERSIONS[name], pooling="target_mean", provenance=PROVENANCE,
                    description=description, labels=labels, checks={"n_folds": 6, "min_class_fraction": 0.30})
    return df


def build_items(log: list | None = None) -> pd.DataFrame:
    return _noun_set(
        read_items_table(log), "items",
        "Exp 1 (item semantics): 'A/An <noun>' for concrete nouns; binary features, 1-7 ratings and surface "
        "controls. group = the noun (one row per noun); 'category' is metadata (do not use it as a feature). "
        "v2: rules rewritten and applied to every row (changes in build_log.csv), holdable dropped, "
        "larger_than_person := size >= 5, homographs kiwi/mouse removed.",
        "; v2 changes logged in stimuli/build_log.csv")


def build_items_heldout() -> pd.DataFrame:
    t = read_noun_table(HERE / "source" / "heldout_table.txt", HELDOUT_COLUMNS)
    t["larger_than_person"] = (t["size"] >= 5).astype("int64")
    return _noun_set(
        t, "items_heldout",
        "Held-out nouns for transfer (train probes on items, test here): 'A/An <noun>', nouns disjoint from "
        "items (no shared lemma, no compound of an items noun), same categories, labelled with the same "
        "written rules as items. Not for CV on its own (small); see probekit.transfer.",
        "; written after the items v2 rules, without looking at any model output")


# =========================================================================== Exp 2A/2B: relations
# Quads: two strongly associated pairs (x1, y1), (x2, y2) from different domains; the
# swapped pairs (x1, y2), (x2, y1) are the unrelated ones. Every word therefore occurs
# once in a related and once in an unrelated pair, and only inside its own quad (group).
# Fields: x1 y1 r11 x2 y2 r22 r12 r21   (r = relatedness 1-7 of (x, y))
RELATION_QUADS = """
church organ 6 cat mouse 6 2 1
pilot cockpit 7 dog bone 6 1 1
farmer barn 6 bee flower 6 2 2
doctor stethoscope 7 spider web 7 1 1
teacher blackboard 6 bird nest 6 1 1
chef apron 5 cow milk 7 2 1
sailor anchor 6 hen egg 6 1 1
soldier helmet 5 squirrel acorn 6 1 1
king crown 7 monkey banana 6 1 1
nurse bandage 6 rabbit carrot 5 1 1
painter easel 6 frog pond 6 1 1
baker dough 7 horse hay 6 1 2
fisherman net 6 camel desert 7 1 2
astronaut rocket 7 penguin iceberg 5 1 1
judge courtroom 6 owl branch 4 1 1
librarian shelf 5 goldfish aquarium 6 2 1
firefighter hose 7 whale ocean 7 1 1
miner pickaxe 6 lion mane 6 1 1
surgeon scalpel 7 toaster bread 6 1 1
pirate treasure 6 mug coffee 6 1 1
cowboy saddle 6 kettle tea 6 1 2
knight sword 6 spoon soup 6 1 1
detective clue 5 bowl cereal 6 1 1
gardener hoe 5 cake candle 6 1 1
plumber pipe 7 pizza cheese 6 1 1
mechanic wrench 7 key lock 7 2 1
hunter rifle 6 pen ink 7 1 1
student homework 6 hammer nail 7 1 1
bride veil 6 sock shoe 6 1 1
clown circus 6 toothbrush toothpaste 7 1 1
monk monastery 6 pillow blanket 6 1 2
shepherd flock 6 pencil eraser 7 1 1
beekeeper honey 7 lamp bulb 6 1 1
tailor thread 6 door handle 6 2 1
jockey racehorse 6 car garage 6 1 1
lifeguard beach 6 train station 6 1 1
waiter tray 6 ship dock 6 1 1
magician wand 7 river bridge 5 1 1
scientist microscope 6 sled snow 6 1 1
photographer camera 7 umbrella rain 7 1 1
mailman letter 6 parasol sunshine 5 1 2
carpenter sawdust 5 volcano lava 7 1 1
barber razor 6 tree leaf 6 1 1
lumberjack axe 6 mountain summit 6 1 1
priest altar 6 chimney smoke 7 1 1
umpire whistle 5 surfboard wave 6 1 1
poet notebook 4 storm thunder 6 1 1
sheriff badge 6 garden hedge 4 1 1
potter clay 7 bicycle pedal 7 1 1
golfer caddie 5 guitar string 6 1 1
goalkeeper goalpost 6 piano stool 5 1 1
acrobat trapeze 6 computer keyboard 7 1 1
ballerina tutu 6 saucepan lid 6 1 1
"""
#: v3 (issue 19): quads added to reach >= 100 (docs/power_n.md sizes the set); same construction and checks.
RELATION_QUADS_V3 = """
dentist drill 6 sheep wool 7 1 1
archer bow 7 mop bucket 6 1 1
conductor baton 7 beaver dam 7 1 1
jeweler diamond 6 lighthouse coast 6 1 1
butcher sausage 6 tent peg 6 1 1
florist bouquet 7 skunk odor 6 1 1
cashier receipt 6 rooster dawn 6 1 1
banker vault 6 moth flame 6 1 1
architect blueprint 7 ant colony 6 1 1
dancer stage 6 turtle shell 7 1 1
gymnast leotard 6 giraffe neck 7 1 1
boxer glove 7 zebra stripe 7 1 1
skier slope 6 oyster pearl 7 1 1
diver snorkel 6 elephant trunk 7 1 1
swimmer goggles 7 peacock feather 6 1 1
singer microphone 7 crab claw 6 1 1
drummer drumstick 7 seal flipper 6 1 1
janitor broom 6 kangaroo pouch 7 1 1
shopkeeper counter 5 cobweb attic 5 1 1
rancher cattle 7 snail slime 6 1 1
astronomer telescope 7 kite wind 6 1 1
archaeologist fossil 6 fireplace log 6 1 1
sculptor chisel 7 mosquito bite 6 1 1
pharmacist pill 7 octopus tentacle 7 1 1
cobbler boot 6 wasp sting 7 1 1
hairdresser scissors 7 bear cave 6 1 1
admiral fleet 6 fox den 6 1 1
mayor city 6 worm soil 6 1 1
chemist laboratory 6 hummingbird nectar 7 1 1
author novel 7 glacier ice 6 1 1
journalist newspaper 7 rose thorn 6 1 1
captain crew 6 necklace pendant 6 1 1
accountant calculator 6 crow scarecrow 6 1 1
actor theater 6 cherry pie 6 1 1
coach team 6 wallet money 6 1 1
nanny baby 6 paint brush 7 1 1
mason brick 7 canoe paddle 7 1 1
ranger forest 6 vase tulip 6 1 1
juggler ball 6 pelican beak 6 1 1
guard prison 6 wagon wheel 6 1 1
prisoner cell 6 kitten yarn 6 1 1
queen throne 7 comb hair 7 1 1
pupil classroom 6 salt pepper 7 1 1
referee foul 6 cup saucer 7 1 1
gambler casino 7 walrus tusk 7 1 1
hiker backpack 6 clock pendulum 6 1 1
plow field 6 parrot cage 6 1 1
sergeant barracks 6 flute melody 5 1 1
princess castle 6 fork knife 7 1 1
electrician wire 7 mole burrow 6 1 1
welder torch 6 dolphin fin 6 1 1
beggar coin 5 cheetah savanna 6 1 1
"""


def _relation_quads():
    quads = []
    for line in (RELATION_QUADS.strip() + "\n" + RELATION_QUADS_V3.strip()).splitlines():
        x1, y1, r11, x2, y2, r22, r12, r21 = line.split()
        quads.append((x1, y1, float(r11), x2, y2, float(r22), float(r12), float(r21)))
    return quads


def build_relations(log: list | None = None) -> pd.DataFrame:
    rows = []
    n_v2 = len(RELATION_QUADS.strip().splitlines())
    for q, (x1, y1, r11, x2, y2, r22, r12, r21) in enumerate(_relation_quads(), start=1):
        g = f"q{q:02d}"
        if q > n_v2 and log is not None:
            log.append({"set": "relations", "row": g, "column": "*", "old": "", "new": f"added {x1}-{y1} / {x2}-{y2}",
                        "reason": "v3: grown to >= 100 quads for power (issue 19, docs/power_n.md)"})
        for x, y, rel, r in ((x1, y1, 1, r11), (x1, y2, 0, r12), (x2, y2, 1, r22), (x2, y1, 0, r21)):
            rows.append({"text": f"{with_article(x)} and {y}", "target": [x, y], "group": g,
                         "x": x, "y": y, "related": rel, "relatedness": r})
    df = pd.DataFrame(rows)
    df["related"] = df["related"].astype("int64")
    df = df.rename(columns={"relatedness": "relatedness_rating"})
    prov = PROVENANCE + "; quads checked automatically: every word once related, once unrelated, in one group only"
    labels = {
        "related": {"kind": "binary", "role": "semantic", "group": "group", "scale": "0 = unrelated, 1 = related",
                    "description": "Exp 2A: the two words are strongly associated (same scene/activity/"
                                   "part-whole/typical use); unrelated pairs are the same words swapped across "
                                   "two related pairs of different domains", "provenance": prov},
    }
    df.attrs.update(name="relations", version=VERSIONS["relations"], pooling="target_mean", provenance=PROVENANCE,
                    description="Exp 2A (two-item relations): 'A/An <x> and <y>', target = [x, y]. Built from "
                                "quads (group) of two related pairs and their two swaps, so each word occurs in "
                                "both classes and in one group only. v3: 105 quads (v2: 53), sized by the power "
                                "analysis in docs/power_n.md. v2: the 1-7 rating is metadata "
                                "('relatedness_rating'), no longer a label: it correlated r = 0.977 with "
                                "'related' (related pairs 4-7, unrelated 1-2 by construction).",
                    labels=labels, checks={"n_folds": 6, "min_class_fraction": 0.30,
                                           "disjoint_words_across_groups": True})
    return df


# =========================================================================== Exp 2C: eats
# v2: a relation that can transfer across animals. Strict carnivores x strict herbivores, each paired
# with the same three generic animal foods and three generic plant foods. eats = the food belongs to the
# animal's diet class. Every animal and every food occurs with both labels exactly equally often, so neither
# word alone predicts the label: the probe has to combine the animal's diet class with the food's class
# (an interaction), and the CV group = the animal, so test animals are unseen.
EATS_DIET = {
    "carnivore": "lion tiger leopard cheetah cougar lynx wolf hyena cat ferret weasel eagle hawk falcon owl "
                 "shark crocodile alligator snake orca",
    "herbivore": "cow horse sheep goat deer zebra rabbit elephant kangaroo donkey camel bison antelope gazelle "
                 "llama yak moose giraffe tortoise koala",
}
EATS_FOOD_CLASS = {"meat": "meat prey flesh", "plants": "plants vegetation leaves"}
EATS_MATCH = {"carnivore": "meat", "herbivore": "plants"}


def build_relations_eats() -> pd.DataFrame:
    rows = []
    for diet, animals in EATS_DIET.items():
        for animal in animals.split():
            for fclass, foods in EATS_FOOD_CLASS.items():
                for food in foods.split():
                    rows.append({"text": f"{with_article(animal)} and {food}", "target": [animal, food],
                                 "group": animal, "animal": animal, "food": food, "diet": diet,
                                 "food_class": fclass, "eats": int(EATS_MATCH[diet] == fclass)})
    df = pd.DataFrame(rows)
    df["eats"] = df["eats"].astype("int64")
    labels = {"eats": {"kind": "binary", "role": "semantic", "group": "group", "scale": "0 = no, 1 = yes",
                       "description": "Exp 2C: the food belongs to the animal's diet class (strict carnivores: "
                                      "meat, prey, flesh; strict herbivores: plants, vegetation, leaves). "
                                      "group = the animal (use 'food' as group for the converse split)",
                       "provenance": PROVENANCE + "; rule-based from the diet class of each animal (strict "
                                                  "carnivores / herbivores only; omnivores left out)"}}
    df.attrs.update(name="relations_eats", version=VERSIONS["relations_eats"], pooling="target_mean",
                    provenance=PROVENANCE,
                    description="Exp 2C (relation that transfers across animals): 'A/An <animal> and <food>', "
                                "target = [animal, food], label eats = diet class match; 20 carnivores and 20 "
                                "herbivores x 3 animal foods and 3 plant foods (all cells), group = animal. "
                                "Neither the animal nor the food alone predicts the label (each is 50/50); "
                                "'diet' and 'food_class' are metadata. v2 replaces the v1 animal-specific "
                                "cells, where nothing could transfer to an unseen animal.",
                    labels=labels, checks={"n_folds": 6, "min_class_fraction": 0.30})
    return df


# =========================================================================== Exp 3: analogies
# v3 (issue 19): twelve relation types x six families of three canonical pairs (v2: eight types x three
# families, 12 blocks). Families are paired into 36 blocks of two types (six disjoint perfect matchings of
# the 12 types; family f of every type goes to
# matching f); a block is the CV group. Within a block with types t and u (pairs t0..t2, u0..u2):
#   valid           t_i : t_j and u_i : u_j            (i != j)      12 rows
#   cross_relation  t_i : u_j and u_i : t_j            (i != j)      12 rows  (both pairs canonical)
#   wrong_d         a_i : b_i as a_j : b_k, k third,  j = i + 1      6 rows   (C:D not canonical)
# In valid + cross_relation every pair occurs as A:B twice valid and twice invalid, and as C:D twice
# valid and twice invalid, so anything computed from A:B alone or from C:D alone (its words, its relation
# type) carries no information about 'valid': only the match between the two relations does.
ANALOGY_FAMILIES = {
    "young_adult": [
        "puppy:dog kitten:cat calf:cow",
        "lamb:sheep foal:horse tadpole:frog",
        "cub:bear piglet:pig duckling:duck",
        "chick:hen fawn:deer joey:kangaroo",
        "gosling:goose cygnet:swan kid:goat",
        "eaglet:eagle owlet:owl caterpillar:butterfly",
    ],
    "male_female": [
        "king:queen actor:actress uncle:aunt",
        "brother:sister husband:wife prince:princess",
        "waiter:waitress nephew:niece monk:nun",
        "father:mother son:daughter boy:girl",
        "duke:duchess emperor:empress hero:heroine",
        "groom:bride lord:lady wizard:witch",
    ],
    "country_capital": [
        "France:Paris Japan:Tokyo Egypt:Cairo",
        "Italy:Rome Russia:Moscow Kenya:Nairobi",
        "Spain:Madrid China:Beijing Peru:Lima",
        "Germany:Berlin Greece:Athens Cuba:Havana",
        "Ireland:Dublin Austria:Vienna Thailand:Bangkok",
        "Norway:Oslo Portugal:Lisbon Chile:Santiago",
    ],
    "opposite": [
        "hot:cold tall:short fast:slow",
        "happy:sad wet:dry heavy:light",
        "open:closed early:late rich:poor",
        "huge:tiny old:young smooth:rough",
        "noisy:silent thick:thin full:empty",
        "strong:weak clean:dirty deep:shallow",
    ],
    "part_whole": [
        "wheel:car page:book petal:flower",
        "branch:tree finger:hand roof:house",
        "lens:camera blade:knife feather:bird",
        "toe:foot keel:boat hinge:door",
        "chapter:novel lid:jar sleeve:jacket",
        "engine:truck screen:laptop yolk:egg",
    ],
    "material_object": [
        "wood:table glass:window wool:sweater",
        "leather:boot paper:envelope clay:pot",
        "gold:ring cotton:shirt brick:wall",
        "silk:scarf stone:statue wax:candle",
        "tin:can denim:jeans rubber:tire",
        "iron:anvil canvas:tent plastic:bucket",
    ],
    "tool_user": [
        "scalpel:surgeon brush:painter hammer:carpenter",
        "wrench:plumber stethoscope:doctor chalk:teacher",
        "microphone:singer whistle:referee needle:tailor",
        "axe:lumberjack lasso:cowboy rod:angler",
        "baton:conductor tripod:photographer telescope:astronomer",
        "easel:artist wand:magician scissors:barber",
    ],
    "worker_workplace": [
        "chef:kitchen farmer:farm sailor:ship",
        "nurse:hospital pilot:cockpit judge:courtroom",
        "librarian:library miner:mine priest:church",
        "banker:bank baker:bakery clerk:office",
        "scientist:laboratory mechanic:garage cashier:supermarket",
        "zookeeper:zoo lifeguard:pool dentist:clinic",
    ],
    "animal_sound": [
        "lion:roar snake:hiss bee:buzz",
        "wolf:howl donkey:bray mouse:squeak",
        "dove:coo turkey:gobble chicken:cluck",
        "elephant:trumpet parrot:squawk crow:caw",
        "hyena:cackle bull:bellow seal:bark",
        "rattlesnake:rattle tiger:growl magpie:chatter",
    ],
    "country_language": [
        "Brazil:Portuguese Mexico:Spanish Sweden:Swedish",
        "Poland:Polish Finland:Finnish Denmark:Danish",
        "Hungary:Hungarian Iran:Persian Israel:Hebrew",
        "Netherlands:Dutch Vietnam:Vietnamese Korea:Korean",
        "India:Hindi Ukraine:Ukrainian Iceland:Icelandic",
        "Pakistan:Urdu Indonesia:Indonesian Romania:Romanian",
    ],
    "sport_equipment": [
        "tennis:racket golf:club hockey:stick",
        "baseball:bat boxing:gloves archery:bow",
        "fencing:foil bowling:pin skating:skates",
        "surfing:surfboard rowing:oar skiing:skis",
        "soccer:ball volleyball:net cycling:bicycle",
        "swimming:goggles climbing:rope darts:dartboard",
    ],
    "food_source": [
        "wine:grape flour:wheat chocolate:cocoa",
        "syrup:maple juice:orange butter:cream",
        "sugar:cane oil:olive coffee:beans",
        "ketchup:tomato cider:apple jam:strawberry",
        "tofu:soybean popcorn:corn pickle:cucumber",
        "guacamole:avocado fries:potato beer:barley",
    ],
}
#: relation types new in v3 (all six families added); the v2 types got families 4-6
V3_ANALOGY_TYPES = ("animal_sound", "country_language", "sport_equipment", "food_source")
#: Family f of each type is paired with the type given by matching f (types indexed in ANALOGY_FAMILIES order):
#: six disjoint perfect matchings of the 12 types (rounds of the circle method), so no two types share a
#: block twice. The first is domain-matched: animals (young_adult, animal_sound), people/adjectives
#: (male_female, opposite), countries (country_capital, country_language), objects (part_whole,
#: material_object), jobs (tool_user, worker_workplace), leisure/food (sport_equipment, food_source).
ANALOGY_MATCHINGS = [
    [(0, 8), (1, 3), (2, 9), (4, 5), (6, 7), (10, 11)],   # domain-matched
    [(0, 1), (2, 3), (4, 6), (5, 7), (8, 10), (9, 11)],
    [(0, 2), (1, 4), (3, 5), (6, 8), (7, 11), (9, 10)],
    [(0, 3), (1, 2), (4, 7), (5, 9), (6, 10), (8, 11)],
    [(0, 4), (1, 5), (2, 6), (3, 11), (7, 10), (8, 9)],
    [(0, 5), (1, 6), (2, 8), (3, 10), (4, 11), (7, 9)],
]


def _analogy_row(a, b, c, d, g, ab_rel, cd_rel, kind, valid):
    return {"text": f"{a} is to {b} as {c} is to {d}", "target": [a, b, c, d], "group": g,
            "ab_relation": ab_rel, "cd_relation": cd_rel, "invalid_kind": kind,
            "a": a, "b": b, "c": c, "d": d, "valid": valid}


def analogy_blocks() -> list[tuple[str, str, list, str, list]]:
    types = list(ANALOGY_FAMILIES)
    fams = {t: [[tuple(p.split(":")) for p in f.split()] for f in fs] for t, fs in ANALOGY_FAMILIES.items()}
    blocks = []
    for f, matching in enumerate(ANALOGY_MATCHINGS):
        for ti, ui in matching:
            t, u = types[ti], types[ui]
            blocks.append((f"b{len(blocks) + 1:02d}", t, fams[t][f], u, fams[u][f]))
    return blocks


def build_analogies(log: list | None = None) -> pd.DataFrame:
    rows = []
    if log is not None:
        for t, fams in ANALOGY_FAMILIES.items():
            for f, fam in enumerate(fams):
                if f >= 3 or t in V3_ANALOGY_TYPES:
                    log.append({"set": "analogies", "row": f"{t}/family{f + 1}", "column": "*", "old": "",
                                "new": f"added {fam}", "reason": "v3: 12 relation types x 6 families, 36 blocks "
                                "(>= 30 CV groups; issue 19, docs/power_n.md)"})
    for g, t, P, u, Q in analogy_blocks():
        for rel, X in ((t, P), (u, Q)):                        # valid
            for i in range(3):
                for j in range(3):
                    if i != j:
                        rows.append(_analogy_row(*X[i], *X[j], g, rel, rel, "none", 1))
        for (r1, X), (r2, Y) in (((t, P), (u, Q)), ((u, Q), (t, P))):   # cross_relation
            for i in range(3):
                for j in range(3):
                    if i != j:
                        rows.append(_analogy_row(*X[i], *Y[j], g, r1, r2, "cross_relation", 0))
        for rel, X in ((t, P), (u, Q)):                        # wrong_d
            for i in range(3):
                j, k = (i + 1) % 3, (i + 2) % 3
                rows.append(_analogy_row(*X[i], X[j][0], X[k][1], g, rel, "none", "wrong_d", 0))
    df = pd.DataFrame(rows)
    df["valid"] = df["valid"].astype("int64")
    labels = {"valid": {"kind": "binary", "role": "semantic", "group": "group", "scale": "0 = invalid, 1 = valid",
                        "description": "Exp 3: the analogy holds (C relates to D as A to B). Two kinds of invalid "
                                       "rows (column invalid_kind): 'cross_relation' = A:B and C:D are both "
                                       "canonical pairs but of different relation types (the primary condition: "
                                       "select invalid_kind != 'wrong_d'); 'wrong_d' = D taken from another pair "
                                       "of the same family, so C:D is not a pair (the v1 condition, secondary: "
                                       "select invalid_kind != 'cross_relation')",
                        "provenance": PROVENANCE + "; design checked automatically: relation types and pairs "
                                                   "balanced across valid/cross_relation in both positions; no "
                                                   "word occurs in two groups"}}
    df.attrs.update(name="analogies", version=VERSIONS["analogies"], pooling="target_mean", provenance=PROVENANCE,
                    description="Exp 3 (four-item analogies): '<A> is to <B> as <C> is to <D>', target = [A, B, C, D]; "
                                "group = block of two relation types (36 blocks). Primary condition: valid vs "
                                "cross_relation (query invalid_kind != 'wrong_d'), where neither pair alone "
                                "predicts the label; secondary: valid vs wrong_d. ab_relation / cd_relation "
                                "('none' = not a canonical pair), invalid_kind, a-d are metadata.",
                    labels=labels, checks={"n_folds": 6, "min_class_fraction": 0.30,
                                           "disjoint_words_across_groups": True})
    return df


def build_analogy_pairs(analogies: pd.DataFrame) -> pd.DataFrame:
    """Each analogy's A:B pair and C:D pair alone, as 'A/An <x> and <y>' (the relations frame), carrying
    the analogy's label, kind and CV group: the pair-only baselines of the analogies experiment."""
    rows = []
    for n, r in enumerate(analogies.itertuples(index=False)):
        for pair, x, y, rel in (("ab", r.a, r.b, r.ab_relation), ("cd", r.c, r.d, r.cd_relation)):
            rows.append({"text": f"{with_article(x)} and {y}", "target": [x, y], "group": r.group,
                         "pair": pair, "analogy": f"an{n:03d}", "pair_relation": rel,
                         "ab_relation": r.ab_relation, "cd_relation": r.cd_relation,
                         "invalid_kind": r.invalid_kind, "x": x, "y": y, "valid": r.valid})
    df = pd.DataFrame(rows)
    df["valid"] = df["valid"].astype("int64")
    labels = {"valid": {"kind": "binary", "role": "control", "group": "group",
                        "scale": "0 = the analogy is invalid, 1 = valid",
                        "description": "the validity of the analogy this pair was taken from (a baseline, not a "
                                       "property of the pair): select pair == 'ab' or pair == 'cd', and "
                                       "invalid_kind != 'wrong_d' for the primary analogies condition",
                        "provenance": PROVENANCE + "; copied from analogies v" + VERSIONS["analogies"]}}
    df.attrs.update(name="analogy_pairs", version=VERSIONS["analogy_pairs"], pooling="target_mean",
                    provenance=PROVENANCE,
                    description="Pair-only baselines for Exp 3: the A:B pair and the C:D pair of every analogy "
                                "alone ('A/An <x> and <y>'), with the analogy's 'valid', 'invalid_kind' and CV "
                                "group. The same text recurs with both labels (by design: a pair is valid in "
                                "some analogies and invalid in others), hence unique_text = false.",
                    labels=labels, checks={"n_folds": 6, "min_class_fraction": 0.30, "unique_text": False})
    return df


# =========================================================================== off-ceiling: senses
# Homographs with an animal sense and a non-animal sense; a modifier before the noun decides the
# sense ("A fruit bat" / "A baseball bat"). The probe pools the noun's tokens only, which are the same
# in all four rows of a noun (the CV group), so the noun's identity says nothing about the label:
# decoding needs the context. noun: (animal modifiers, other modifiers, kind of the other sense)
SENSES = {
    "bat": ("fruit vampire", "baseball cricket", "artifact"),
    "mouse": ("field house", "computer wireless", "artifact"),
    "crane": ("whooping sandhill", "construction tower", "artifact"),
    "seal": ("harbor elephant", "wax rubber", "artifact"),
    "bug": ("stink bed", "software serious", "abstract"),
    "bass": ("largemouth striped", "electric acoustic", "artifact"),
    "pike": ("northern freshwater", "medieval wooden", "artifact"),
    "ram": ("bighorn horned", "battering hydraulic", "artifact"),
    "kite": ("red black", "paper box", "artifact"),
    "cardinal": ("northern red", "Catholic senior", "person"),
    "worm": ("garden slimy", "computer malicious", "software"),
    "sole": ("Dover lemon", "rubber leather", "artifact"),
    "skate": ("thornback spotted", "ice roller", "artifact"),
    "ray": ("manta eagle", "gamma cosmic", "natural"),
    "perch": ("yellow river", "wooden bamboo", "artifact"),
    "horse": ("wild racing", "vaulting rocking", "artifact"),
    "mule": ("pack stubborn", "leather satin", "artifact"),
    "boxer": ("brindle purebred", "heavyweight professional", "person"),
    "pointer": ("hunting German", "laser wooden", "artifact"),
    "rook": ("black noisy", "chess white", "artifact"),
    "shark": ("tiger hammerhead", "loan card", "person"),
    "rat": ("brown sewer", "mall gym", "person"),
    "bear": ("polar grizzly", "teddy stuffed", "artifact"),
    "dog": ("stray sheep", "hot corn", "food"),
    "bee": ("honey bumble", "spelling quilting", "event"),
    "slug": ("garden banana", "lead brass", "artifact"),
    "mole": ("garden star-nosed", "facial cancerous", "body"),
    "fly": ("house fruit", "fishing dry", "artifact"),
    "drone": ("male hive", "camera delivery", "artifact"),
    "chicken": ("farm clucking", "roast fried", "food"),
    "turkey": ("wild strutting", "roast smoked", "food"),
    "duck": ("wild mallard", "roast crispy", "food"),
    "lamb": ("newborn bleating", "roast braised", "food"),
    "setter": ("Irish English", "trend record", "person"),
    "monitor": ("Nile desert", "computer heart", "artifact"),
}


def build_senses() -> pd.DataFrame:
    rows = []
    for noun, (animal_mods, other_mods, kind) in SENSES.items():
        for mods, is_animal, sense in ((animal_mods, 1, "animal"), (other_mods, 0, kind)):
            for mod in mods.split():
                rows.append({"text": f"{with_article(mod)} {noun}", "target": noun, "group": noun,
                             "modifier": mod, "sense": sense, "animal_sense": is_animal})
    df = pd.DataFrame(rows)
    df["animal_sense"] = df["animal_sense"].astype("int64")
    labels = {"animal_sense": {
        "kind": "binary", "role": "semantic", "group": "group", "scale": "0 = other sense, 1 = the animal",
        "description": "in this context the noun refers to a living animal (fruit bat, field mouse) rather than "
                       "an artifact, food, person, event or other thing (baseball bat, computer mouse, roast "
                       "duck). Every noun occurs twice with each label, so the noun alone is at chance; pooled "
                       "over the noun only, the label is decodable only from context mixed into it",
        "provenance": PROVENANCE + "; rule-based: the modifier names a species/variety/behaviour of the animal, "
                                   "or a use/material/kind of the other sense"}}
    df.attrs.update(name="senses", version=VERSIONS["senses"], pooling="target_mean", provenance=PROVENANCE,
                    description="Off-ceiling item feature: '<A/An> <modifier> <homograph>', target = the homograph "
                                "(the same tokens in all four rows of a noun), label animal_sense; group = the noun. "
                                "The layer-0 resid_pre probe sees identical vectors for both labels of a noun, so "
                                "it sits at chance by construction: any gain above it is contextual.",
                    labels=labels, checks={"n_folds": 6, "min_class_fraction": 0.30})
    return df


# =========================================================================== Exp 4: buried
# Neutral filler: no objects, animals, foods, places or people's roles.
FILLER_BANK = [
    "The afternoon went by slowly, and nothing unusual happened.",
    "Later, the conversation drifted toward plans for the coming weeks.",
    "Everyone agreed that patience would matter more than speed.",
    "It was hard to say exactly how long the wait lasted.",
    "Some of the details seemed important at first but faded quickly.",
    "After a while, the mood became calmer and more relaxed.",
    "Nobody was in a hurry to reach any particular decision.",
    "The discussion continued for some time without a clear conclusion.",
    "Many small thoughts came and went without leaving much behind.",
    "There was a general feeling that things would work out eventually.",
    "Most of the morning was spent waiting for news.",
    "The schedule changed twice, which surprised almost nobody.",
    "People spoke quietly, as if they did not want to interrupt.",
    "It seemed sensible to stay flexible about everything.",
    "In the end, the outcome was neither good nor bad.",
    "Several ideas were mentioned, though none of them was pursued.",
    "Time passed at its usual steady pace.",
    "Someone remarked that the day felt longer than expected.",
    "There were moments of silence, followed by brief bursts of talk.",
    "The plan was simple, yet it required careful attention.",
    "Nobody could remember exactly when the idea first came up.",
    "The rest of the evening passed in a quiet and ordinary way.",
    "Some questions remained unanswered, and that was acceptable to everyone.",
    "It was one of those days when little seems to change.",
    "Memories of earlier conversations returned from time to time.",
    "Later on, the reasons behind the choice became clearer.",
    "Everything happened more or less as people had predicted.",
    "There was no reason to worry, so nobody did.",
    "The pace of the week was steady and unremarkable.",
    "A few people disagreed, but the disagreement stayed friendly.",
    "After some thought, it seemed better to wait a little longer.",
    "The story was told again, with slightly different emphasis.",
    "Nothing that was said that day turned out to be surprising.",
    "For a while, everyone seemed lost in their own thoughts.",
    "It was easy to lose track of time in such moments.",
    "The explanation was long, but it was also quite clear.",
    "Eventually the topic changed to something more general.",
    "There was a sense of routine in everything that happened.",
    "Some of the arguments were convincing, and others were not.",
    "The hours went by without any real interruptions.",
    "Nobody mentioned the earlier plans again that week.",
    "It felt natural to let the matter rest for a while.",
    "Then the talk turned to how quickly the season was passing.",
    "Each step of the process took a little longer than planned.",
    "The general impression was one of calm and order.",
    "Most people preferred to listen rather than to speak.",
    "Small changes were noticed, but none of them mattered much.",
    "By then, the earlier worries had mostly faded away.",
]
BURIED_LABELS = ("edible", "animal", "larger_than_person")
CONCEPT_SENTENCE = "I kept thinking about {np}."
FILLER_WORDS = 94          # filler words per passage, at least (concept sentence adds 5)
WORD_COUNT = (95, 120)


def filler_passage(rng: random.Random) -> tuple[list[int], str]:
    order = list(range(len(FILLER_BANK)))
    rng.shuffle(order)
    ids, words = [], 0
    for i in order:
        ids.append(i)
        words += len(FILLER_BANK[i].split())
        if words >= FILLER_WORDS:
            break
    return ids, " ".join(FILLER_BANK[i] for i in ids)


def build_buried(items: pd.DataFrame) -> pd.DataFrame:
    rng = random.Random(SEED)
    rows = []
    for n, it in enumerate(items.itertuples(index=False)):
        noun = it.target
        ids, filler = filler_passage(rng)
        concept = CONCEPT_SENTENCE.format(np=with_article(noun, capital=False))
        fid = f"F{n:03d}"
        for placement, text in (("early", f"{concept} {filler}"), ("end", f"{filler} {concept}")):
            row = {"text": text, "target": noun, "group": noun, "placement": placement, "filler_id": fid,
                   "filler_sentences": ",".join(map(str, ids))}
            for lab in BURIED_LABELS:
                row[lab] = int(getattr(it, lab))
            row["n_letters"] = float(len(noun))
            row["zipf"] = float(it.zipf)
            rows.append(row)
    df = pd.DataFrame(rows)
    for lab in BURIED_LABELS:
        df[lab] = df[lab].astype("int64")
    labels = {lab: {"kind": "binary", "role": "semantic", "group": "group", "scale": "0 = no, 1 = yes",
                    "description": f"Exp 4: the buried concept's '{lab}' feature (copied from the items set: "
                                   f"{ITEM_BINARY[lab]})",
                    "provenance": PROVENANCE + "; labels copied from items v" + VERSIONS["items"]}
              for lab in BURIED_LABELS}
    labels.update(_surface_labels("the buried concept word"))
    df.attrs.update(name="buried", version=VERSIONS["buried"], pooling="last_token", provenance=PROVENANCE,
                    description="Exp 4 (buried concepts): 'I kept thinking about a/an <noun>.' placed before "
                                "(placement=early) or after (placement=end, the control) ~95 words of neutral "
                                "filler assembled with a fixed seed from a bank of 48 sentences; probed at the "
                                "last token. The same filler (filler_id) is used for a concept's early and end "
                                "rows; group = the concept word. Filter on 'placement' before probing.",
                    labels=labels, checks={"n_folds": 6, "min_class_fraction": 0.30,
                                           "word_count": list(WORD_COUNT)})
    return df


# =========================================================================== main
BUILD_LOG = "build_log.csv"


def build_all(log: list | None = None) -> dict[str, pd.DataFrame]:
    items = build_items(log)
    analogies = build_analogies(log)
    return {
        "items": items,
        "items_heldout": build_items_heldout(),
        "senses": build_senses(),
        "relations": build_relations(log),
        "relations_eats": build_relations_eats(),
        "analogies": analogies,
        "analogy_pairs": build_analogy_pairs(analogies),
        "buried": build_buried(items),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE), help="output folder (default: stimuli/)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    log: list[dict] = []
    for name, df in build_all(log).items():
        p = save(df, out / f"{name}.csv")
        print(f"{name:15s} {len(df):5d} rows  v{df.attrs['version']}  -> {p}")
    pd.DataFrame(log, columns=["set", "row", "column", "old", "new", "reason"]).to_csv(
        out / BUILD_LOG, index=False, lineterminator="\n")
    print(f"{len(log)} logged changes -> {out / BUILD_LOG}")


if __name__ == "__main__":
    main()
