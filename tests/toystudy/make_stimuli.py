"""Builds colours.csv/.json, the toy study's stimulus set (run once; the files are committed)."""
import csv
import json
from pathlib import Path

WARM = ["red", "orange", "yellow", "pink", "gold", "amber"]
COOL = ["blue", "green", "teal", "violet", "cyan", "indigo"]
NOUNS = ["car", "door", "cup", "coat", "wall", "kite", "ball", "pen"]
here = Path(__file__).parent
rows = []
for i, (w, c) in enumerate(zip(WARM, COOL)):
    for k, n in enumerate(NOUNS[:4] if i % 2 else NOUNS[4:]):
        colour = w if k % 2 == 0 else c
        art = "An" if colour[0] in "aeiou" else "A"
        rows.append({"text": f"{art} {colour} {n}", "target": colour, "group": f"g{i:02d}", "warm": int(colour in WARM)})
with open(here / "colours.csv", "w", newline="") as f:
    wr = csv.DictWriter(f, fieldnames=["text", "target", "group", "warm"])
    wr.writeheader()
    wr.writerows(rows)
meta = {"name": "colours", "version": "0.1.0", "description": "toy study: 'A <colour> <noun>', warm vs cool colour",
        "pooling": "target_mean", "n_rows": len(rows), "columns": ["text", "target", "group", "warm"],
        "list_columns": [], "target_sep": "|",
        "labels": {"warm": {"kind": "binary", "role": "semantic", "group": "group", "scale": "0 = cool, 1 = warm",
                            "description": "the colour word is a warm colour", "provenance": "test fixture"}}}
(here / "colours.json").write_text(json.dumps(meta, indent=1))
