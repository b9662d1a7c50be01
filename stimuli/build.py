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
sys.path.insert(0, str(HERE.parent))

from probekit.stimuli import save, with_article  # noqa: E402

DATE = "2026-11-25"
PROVENANCE = (f"authored by the probekit developers with LLM assistance, {DATE}; not human-normed")
VERSIONS = {"items": "1.0.0", "relations": "1.0.0", "relations_eats": "1.0.0",
            "analogies": "1.0.0", "buried": "1.0.0"}
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
ITEM_BINARY = {
    "living": "is a whole living organism (animal, person, plant or fungus) in its usual form; "
              "harvested fruit/vegetables/nuts/eggs count as not living",
    "animal": "is a (non-human) animal",
    "edible": "it, or its flesh, is commonly eaten by people",
    "man_made": "is made by people (artifacts, buildings, vehicles and prepared foods)",
    "larger_than_person": "a typical one is larger than an adult person",
    "found_indoors": "is typically found inside a home or other building",
    "holdable": "a typical adult can pick up and hold a typical one in one hand",
}
ITEM_CONT = {
    "size": "typical size; anchors 1 = fits on a fingertip, 2 = fits in a palm, 3 = carried in the arms, "
            "4 = roughly child-to-person size, 5 = bigger than a person / room size, 6 = house size, "
            "7 = larger than a house (landscape scale)",
    "danger": "how dangerous it is to people; 1 = harmless, 4 = can injure if mishandled, 7 = often lethal",
    "pleasantness": "how pleasant it is to most people; 1 = very unpleasant, 4 = neutral, 7 = very pleasant",
}


def read_items_table() -> pd.DataFrame:
    cols = ["noun", "category", *ITEM_BINARY, *ITEM_CONT]
    rows = []
    for line in (HERE / "source" / "items_table.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != len(cols):
            raise ValueError(f"items_table.txt: bad line {line!r}")
        rows.append(parts)
    t = pd.DataFrame(rows, columns=cols)
    for c in ITEM_BINARY:
        t[c] = t[c].astype("int64")
    for c in ITEM_CONT:
        t[c] = t[c].astype("float64")
    return t


def build_items() -> pd.DataFrame:
    t = read_items_table()
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
    prov = PROVENANCE + "; cross-checked against WordNet 3.0 hypernyms where possible (tests/test_stimuli.py)"
    labels = {c: {"kind": "binary", "role": "semantic", "group": "group", "scale": "0 = no, 1 = yes",
                  "description": d, "provenance": prov} for c, d in ITEM_BINARY.items()}
    labels.update({c: {"kind": "continuous", "role": "semantic", "group": "group", "range": [1, 7],
                       "scale": RATING_SCALE, "description": d, "provenance": PROVENANCE + "; single rater"}
                   for c, d in ITEM_CONT.items()})
    labels.update(_surface_labels("the noun"))
    df.attrs.update(name="items", version=VERSIONS["items"], pooling="target_mean", provenance=PROVENANCE,
                    description="Exp 1 (item semantics): 'A/An <noun>' for concrete nouns; binary features, "
                                "1-7 ratings and surface controls. group = the noun (one row per noun); "
                                "'category' is metadata (do not use it as a feature).",
                    labels=labels, checks={"n_folds": 6, "min_class_fraction": 0.30})
    return df


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


def _relation_quads():
    quads = []
    for line in RELATION_QUADS.strip().splitlines():
        x1, y1, r11, x2, y2, r22, r12, r21 = line.split()
        quads.append((x1, y1, float(r11), x2, y2, float(r22), float(r12), float(r21)))
    return quads


def build_relations() -> pd.DataFrame:
    rows = []
    for q, (x1, y1, r11, x2, y2, r22, r12, r21) in enumerate(_relation_quads(), start=1):
        g = f"q{q:02d}"
        for x, y, rel, r in ((x1, y1, 1, r11), (x1, y2, 0, r12), (x2, y2, 1, r22), (x2, y1, 0, r21)):
            rows.append({"text": f"{with_article(x)} and {y}", "target": [x, y], "group": g,
                         "x": x, "y": y, "related": rel, "relatedness": r})
    df = pd.DataFrame(rows)
    df["related"] = df["related"].astype("int64")
    prov = PROVENANCE + "; quads checked automatically: every word once related, once unrelated, in one group only"
    labels = {
        "related": {"kind": "binary", "role": "semantic", "group": "group", "scale": "0 = unrelated, 1 = related",
                    "description": "Exp 2A: the two words are strongly associated (same scene/activity/"
                                   "part-whole/typical use); unrelated pairs are the same words swapped across "
                                   "two related pairs of different domains", "provenance": prov},
        "relatedness": {"kind": "continuous", "role": "semantic", "group": "group", "range": [1, 7],
                        "scale": RATING_SCALE,
                        "description": "Exp 2B: how related the two words are; 1 = unrelated, 4 = loosely related, "
                                       "7 = very strongly associated. By construction related pairs are rated 4-7 "
                                       "and unrelated 1-2, so 2B adds within-class variation to 2A",
                        "provenance": PROVENANCE + "; single rater"},
    }
    df.attrs.update(name="relations", version=VERSIONS["relations"], pooling="target_mean", provenance=PROVENANCE,
                    description="Exp 2A/2B (two-item relations): 'A/An <x> and <y>', target = [x, y]. Built from "
                                "quads (group) of two related pairs and their two swaps, so each word occurs in "
                                "both classes and in one group only.",
                    labels=labels, checks={"n_folds": 6, "min_class_fraction": 0.30,
                                           "disjoint_words_across_groups": True})
    return df


# =========================================================================== Exp 2C: eats
# eats = the food is a normal part of the animal's natural or usual diet.
# Per animal: foods it eats / foods it clearly does not eat. Cells that are
# ambiguous (a dog and fish, a bear and meat ...) are simply not listed.
EATS_FOODS = ["fish", "grass", "meat", "seeds", "nectar", "insects", "nuts", "hay", "bamboo",
              "plankton", "worms", "fruit", "leaves", "mice", "honey", "carrots"]
EATS = {
    # animal: (eats, does not eat)
    "cat": ("fish meat mice", "grass seeds nectar nuts hay bamboo plankton fruit leaves honey carrots"),
    "lion": ("meat", "fish grass seeds nectar insects nuts hay bamboo plankton worms fruit leaves honey carrots"),
    "tiger": ("meat", "grass seeds nectar insects nuts hay bamboo plankton worms fruit leaves honey carrots"),
    "wolf": ("meat mice", "grass seeds nectar insects nuts hay bamboo plankton worms leaves honey carrots"),
    "shark": ("fish meat", "grass seeds nectar insects nuts hay bamboo worms fruit leaves mice honey carrots"),
    "penguin": ("fish plankton", "grass meat seeds nectar insects nuts hay bamboo worms fruit leaves mice honey carrots"),
    "whale": ("plankton fish", "grass seeds nectar insects nuts hay bamboo worms fruit leaves mice honey carrots"),
    "eagle": ("fish mice meat", "grass seeds nectar nuts hay bamboo plankton fruit leaves honey carrots"),
    "owl": ("mice insects", "grass seeds nectar nuts hay bamboo plankton fruit leaves honey carrots"),
    "snake": ("mice", "grass seeds nectar nuts hay bamboo plankton fruit leaves honey carrots"),
    "cow": ("grass hay", "fish meat nectar insects nuts plankton worms mice honey"),
    "horse": ("grass hay carrots", "fish meat nectar insects plankton worms mice honey bamboo"),
    "sheep": ("grass hay", "fish meat nectar insects nuts bamboo plankton worms mice honey"),
    "goat": ("grass hay leaves", "fish meat nectar insects plankton worms mice honey"),
    "rabbit": ("grass hay carrots leaves", "fish meat nectar insects nuts bamboo plankton worms mice honey"),
    "giraffe": ("leaves", "fish meat seeds nectar insects nuts bamboo plankton worms mice honey carrots"),
    "panda": ("bamboo", "fish meat seeds nectar insects nuts hay plankton worms mice honey carrots"),
    "koala": ("leaves", "fish grass meat seeds nectar insects nuts hay bamboo plankton worms fruit mice honey carrots"),
    "bee": ("nectar honey", "fish grass meat seeds insects nuts hay bamboo plankton worms fruit leaves mice carrots"),
    "hummingbird": ("nectar insects", "fish grass meat seeds nuts hay bamboo plankton worms leaves mice carrots"),
    "butterfly": ("nectar", "fish grass meat seeds insects nuts hay bamboo plankton worms mice honey carrots"),
    "squirrel": ("nuts seeds fruit", "fish grass meat nectar hay bamboo plankton worms mice honey"),
    "sparrow": ("seeds insects", "fish grass meat nectar hay bamboo plankton mice honey carrots"),
    "chicken": ("seeds insects worms", "fish nectar hay bamboo plankton honey"),
    "frog": ("insects worms", "fish grass meat seeds nectar nuts hay bamboo plankton fruit leaves honey carrots"),
    "mole": ("worms insects", "fish grass meat seeds nectar nuts hay bamboo plankton fruit leaves mice honey carrots"),
    "anteater": ("insects", "fish grass meat seeds nectar nuts hay bamboo plankton fruit leaves mice honey carrots"),
    "monkey": ("fruit leaves nuts", "fish grass meat nectar hay bamboo plankton worms mice"),
    "bear": ("fish honey fruit nuts", "grass hay bamboo plankton nectar"),
    "robin": ("worms insects", "fish grass meat nectar nuts hay bamboo plankton mice honey carrots"),
    "otter": ("fish", "grass seeds nectar nuts hay bamboo plankton fruit leaves mice honey carrots"),
    "seal": ("fish", "grass seeds nectar insects nuts hay bamboo worms fruit leaves mice honey carrots"),
    "pelican": ("fish", "grass meat seeds nectar nuts hay bamboo worms fruit leaves mice honey carrots"),
    "dolphin": ("fish", "grass seeds nectar insects nuts hay bamboo worms fruit leaves mice honey carrots"),
    "crocodile": ("fish meat", "grass seeds nectar nuts hay bamboo plankton fruit leaves honey carrots"),
    "hawk": ("mice meat", "grass seeds nectar nuts hay bamboo plankton fruit leaves honey carrots"),
    "hedgehog": ("insects worms", "fish grass nectar nuts hay bamboo plankton leaves honey carrots"),
    "spider": ("insects", "fish grass meat seeds nectar nuts hay bamboo plankton worms fruit leaves mice honey carrots"),
    "lizard": ("insects", "fish grass seeds nectar nuts hay bamboo plankton leaves mice honey carrots"),
    "chameleon": ("insects", "fish grass meat seeds nectar nuts hay bamboo plankton fruit leaves mice honey carrots"),
    "parrot": ("seeds nuts fruit", "fish grass meat hay bamboo plankton worms mice honey carrots"),
    "hamster": ("seeds nuts carrots", "fish meat nectar hay bamboo plankton mice honey"),
    "toucan": ("fruit", "grass meat nectar nuts hay bamboo plankton worms leaves mice honey carrots"),
    "caterpillar": ("leaves", "fish meat seeds nectar insects nuts hay bamboo plankton worms fruit mice honey carrots"),
    "gorilla": ("leaves fruit", "fish grass meat seeds nectar insects hay plankton worms mice honey carrots"),
    "deer": ("grass leaves", "fish meat seeds nectar insects hay bamboo plankton worms mice honey"),
    "zebra": ("grass", "fish meat seeds nectar insects nuts bamboo plankton worms fruit mice honey carrots"),
    "kangaroo": ("grass leaves", "fish meat seeds nectar insects nuts bamboo plankton worms mice honey carrots"),
    "donkey": ("grass hay carrots", "fish meat nectar insects bamboo plankton worms mice honey"),
    "elephant": ("grass leaves fruit", "fish meat insects plankton worms mice honey nectar"),
    "hippopotamus": ("grass", "fish meat seeds nectar insects nuts bamboo plankton worms mice honey carrots"),
    "duck": ("seeds insects worms", "meat nectar hay bamboo mice honey carrots"),
    "ant": ("seeds insects nectar honey", "fish grass hay bamboo plankton mice carrots"),
    "mouse": ("seeds nuts", "fish meat nectar hay bamboo plankton mice honey"),
}
EATS_NEG_PER_POS = 1.25  # negatives kept per positive, overall and (as far as possible) per animal and per food


def select_eats_negatives(seed: int) -> set[tuple[str, str]]:
    """Pick the negative (animal, food) cells: greedily fill the largest per-animal plus per-food
    deficit, so every animal and every food has about as many negatives as positives (ties by seed)."""
    rng = random.Random(seed)
    pos_a = {a: len(p.split()) for a, (p, _) in EATS.items()}
    pos_f = {f: sum(f in p.split() for p, _ in EATS.values()) for f in EATS_FOODS}
    want_a = {a: max(2, round(EATS_NEG_PER_POS * n)) for a, n in pos_a.items()}
    want_f = {f: max(1, round(EATS_NEG_PER_POS * n)) for f, n in pos_f.items()}
    cand = [(a, f) for a, (_, n) in EATS.items() for f in n.split()]
    rng.shuffle(cand)
    total = round(EATS_NEG_PER_POS * sum(pos_a.values()))
    chosen: set[tuple[str, str]] = set()
    have_a = dict.fromkeys(EATS, 0)
    have_f = dict.fromkeys(EATS_FOODS, 0)
    while len(chosen) < total:
        best, score = None, None
        for c in cand:
            if c in chosen:
                continue
            sc = (want_a[c[0]] - have_a[c[0]]) + (want_f[c[1]] - have_f[c[1]])
            if score is None or sc > score:
                best, score = c, sc
        if best is None:
            break
        chosen.add(best)
        have_a[best[0]] += 1
        have_f[best[1]] += 1
    return chosen


def build_relations_eats() -> pd.DataFrame:
    negs = select_eats_negatives(SEED + 2)
    rows = []
    for animal, (pos, neg) in EATS.items():
        pos, neg = pos.split(), neg.split()
        assert not set(pos) & set(neg), animal
        assert set(pos) | set(neg) <= set(EATS_FOODS), animal
        chosen = [f for f in EATS_FOODS if (animal, f) in negs]
        for food, eats in [(f, 1) for f in pos] + [(f, 0) for f in chosen]:
            rows.append({"text": f"{with_article(animal)} and {food}", "target": [animal, food],
                         "group": animal, "animal": animal, "food": food, "eats": eats})
    df = pd.DataFrame(rows)
    df["eats"] = df["eats"].astype("int64")
    labels = {"eats": {"kind": "binary", "role": "semantic", "group": "group", "scale": "0 = no, 1 = yes",
                       "description": "Exp 2C: the food is a normal part of this animal's natural or usual diet. "
                                      "group = the animal (use 'food' as group for the converse split)",
                       "provenance": PROVENANCE + "; ambiguous animal-food cells omitted; every animal and every "
                                                  "food checked to occur with both labels"}}
    df.attrs.update(name="relations_eats", version=VERSIONS["relations_eats"], pooling="target_mean",
                    provenance=PROVENANCE,
                    description="Exp 2C (relation with group structure): 'A/An <animal> and <food>', target = "
                                "[animal, food], label eats; group = animal, so test animals are unseen and each "
                                "animal/food occurs with both labels.",
                    labels=labels, checks={"n_folds": 6, "min_class_fraction": 0.30})
    return df


# =========================================================================== Exp 3: analogies
# Families of three pairs sharing one relation. Within a family, for every ordered
# (i, j), i != j: valid "a_i is to b_i as a_j is to b_j" and invalid
# "a_i is to b_i as a_j is to b_k" (k the third pair). Each D word is thus used
# twice as a valid and twice as an invalid completion, and families share no word.
ANALOGY_FAMILIES = {
    "young_adult": [
        "puppy:dog kitten:cat calf:cow",
        "lamb:sheep foal:horse tadpole:frog",
        "cub:bear piglet:pig duckling:duck",
    ],
    "country_capital": [
        "France:Paris Japan:Tokyo Egypt:Cairo",
        "Italy:Rome Russia:Moscow Kenya:Nairobi",
        "Spain:Madrid China:Beijing Peru:Lima",
    ],
    "opposite": [
        "hot:cold tall:short fast:slow",
        "happy:sad wet:dry heavy:light",
        "open:closed early:late rich:poor",
    ],
    "part_whole": [
        "wheel:car page:book petal:flower",
        "branch:tree finger:hand roof:house",
        "lens:camera blade:knife feather:bird",
    ],
    "tool_user": [
        "scalpel:surgeon brush:painter hammer:carpenter",
        "wrench:plumber stethoscope:doctor chalk:teacher",
        "microphone:singer whistle:referee needle:tailor",
    ],
    "material_object": [
        "wood:table glass:window wool:sweater",
        "leather:boot paper:envelope clay:pot",
        "gold:ring cotton:shirt brick:wall",
    ],
    "male_female": [
        "king:queen actor:actress uncle:aunt",
        "brother:sister husband:wife prince:princess",
        "waiter:waitress nephew:niece monk:nun",
    ],
}


def build_analogies() -> pd.DataFrame:
    rows = []
    fam_no = 0
    for rtype, fams in ANALOGY_FAMILIES.items():
        for fam in fams:
            fam_no += 1
            pairs = [tuple(p.split(":")) for p in fam.split()]
            assert len(pairs) == 3
            g = f"{rtype}_{fam_no:02d}"
            for i in range(3):
                for j in range(3):
                    if i == j:
                        continue
                    k = 3 - i - j
                    a, b = pairs[i]
                    c, d_valid = pairs[j]
                    for d, valid in ((d_valid, 1), (pairs[k][1], 0)):
                        rows.append({"text": f"{a} is to {b} as {c} is to {d}", "target": [a, b, c, d],
                                     "group": g, "relation_type": rtype, "a": a, "b": b, "c": c, "d": d,
                                     "valid": valid})
    df = pd.DataFrame(rows)
    df["valid"] = df["valid"].astype("int64")
    labels = {"valid": {"kind": "binary", "role": "semantic", "group": "group", "scale": "0 = invalid, 1 = valid",
                        "description": "Exp 3: the analogy holds (C relates to D as A to B); invalid ones keep A, B, "
                                       "C and take D from another pair of the same family (same category, and used "
                                       "as a valid D elsewhere)",
                        "provenance": PROVENANCE + "; checked automatically: each D is valid and invalid equally "
                                                   "often; no word occurs in two groups"}}
    df.attrs.update(name="analogies", version=VERSIONS["analogies"], pooling="target_mean", provenance=PROVENANCE,
                    description="Exp 3 (four-item analogies): '<A> is to <B> as <C> is to <D>', target = [A, B, C, D]; "
                                "group = word family (connected component of shared words); relation_type is metadata.",
                    labels=labels, checks={"n_folds": 6, "min_class_fraction": 0.30,
                                           "disjoint_words_across_groups": True})
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
def build_all() -> dict[str, pd.DataFrame]:
    items = build_items()
    return {
        "items": items,
        "relations": build_relations(),
        "relations_eats": build_relations_eats(),
        "analogies": build_analogies(),
        "buried": build_buried(items),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE), help="output folder (default: stimuli/)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    for name, df in build_all().items():
        p = save(df, out / f"{name}.csv")
        print(f"{name:15s} {len(df):5d} rows  v{df.attrs['version']}  -> {p}")


if __name__ == "__main__":
    main()
