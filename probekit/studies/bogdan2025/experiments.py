"""The experiments of arXiv 2501.07359 (Bogdan 2025) on probekit's stimulus sets."""
from probekit.experiments import Experiment

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment("items", "items", "single concrete nouns, 'An apple': binary semantic features, mean over features",
               paper="Exp 1 (item-level semantics)"),
    Experiment("relations", "relations", "'A church and organ': related vs unrelated pairs (2A)",
               paper="Exp 2A (two-item relations)", primary=("related",)),
    Experiment("relations_eats", "relations_eats", "'A cat and fish': does the animal eat the food (2C), "
               "folds grouped by animal", paper="Exp 2C (relation with group-structured folds)", primary=("eats",)),
    Experiment("analogies", "analogies", "four-item analogies, valid vs invalid, folds by word family",
               paper="Exp 3 (four-item analogies)", primary=("valid",)),
    Experiment("buried", "buried", "a concept early in ~100 words of filler, read from the last token",
               paper="Exp 4 (buried concepts)", query="placement == 'early'"),
    Experiment("buried_end", "buried", "control: the same concepts at the end of the same filler",
               paper="Exp 4 control (concept at the end)", query="placement == 'end'"),
]}


