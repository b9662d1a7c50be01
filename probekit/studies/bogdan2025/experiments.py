"""The experiments of arXiv 2501.07359 (Bogdan 2025) on probekit's stimulus sets."""
from probekit.stimuli.experiments import Experiment

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment("items", "items", "single concrete nouns, 'An apple': binary semantic features, mean over features",
               paper="Exp 1 (item-level semantics)"),
    Experiment("relations", "relations", "'A church and organ': related vs unrelated pairs (2A)",
               paper="Exp 2A (two-item relations)", primary=("related",)),
    Experiment("relations_eats", "relations_eats", "'A lion and prey': does the food match the animal's diet "
               "class (2C), folds grouped by animal", paper="Exp 2C (relation with group-structured folds)",
               primary=("eats",)),
    Experiment("analogies", "analogies", "four-item analogies, valid vs cross-relation (both pairs canonical, "
               "different relation types), folds by block", paper="Exp 3 (four-item analogies)",
               query="invalid_kind != 'wrong_d'", primary=("valid",)),
    Experiment("analogies_ab_only", "analogy_pairs", "control: the analogy's A:B pair alone ('A puppy and dog'), "
               "the analogy's validity label", paper="Exp 3 shortcut control (pair only)",
               query="pair == 'ab' and invalid_kind != 'wrong_d'", primary=("valid",)),
    Experiment("analogies_cd_only", "analogy_pairs", "control: the analogy's C:D pair alone, the analogy's "
               "validity label", paper="Exp 3 shortcut control (pair only)",
               query="pair == 'cd' and invalid_kind != 'wrong_d'", primary=("valid",)),
    Experiment("analogies_wrong_d", "analogies", "secondary: valid vs 'wrong last word' (v1's kind, where C:D "
               "alone predicts the label)", paper="Exp 3, v1-style invalids",
               query="invalid_kind != 'cross_relation'", primary=("valid",)),
    Experiment("analogies_wrong_d_cd_only", "analogy_pairs", "secondary control: C:D alone for the wrong-last-word "
               "condition (the shortcut)", paper="Exp 3 shortcut control (pair only)",
               query="pair == 'cd' and invalid_kind != 'cross_relation'", primary=("valid",)),
    Experiment("senses", "senses", "off-ceiling items: a homograph's animal sense decided by its context "
               "('A fruit bat' / 'A baseball bat'), chance at layer 0 by construction",
               paper="Exp 1 extension (context-dependent item feature)", primary=("animal_sense",)),
    Experiment("buried", "buried", "a concept early in ~100 words of filler, read from the last token",
               paper="Exp 4 (buried concepts)", query="placement == 'early'"),
    Experiment("buried_end", "buried", "control: the same concepts at the end of the same filler",
               paper="Exp 4 control (concept at the end)", query="placement == 'end'"),
]}



# held-out transfer: (experiment whose probes are trained, stimulus set they are tested on)
TRANSFERS = (("items", "items_heldout"),)
