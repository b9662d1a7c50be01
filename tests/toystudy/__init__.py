"""A toy second study that lives only under tests/: two claims, one stimulus set, its own paper rows.

It proves the core needs no edit for a new study: ``pytest benchmarks --study tests/toystudy``,
``probekit run --study tests/toystudy`` and the report/audit all go through the same code as bogdan2025.
"""
from pathlib import Path

import numpy as np
import pandas as pd

from probekit.profiles import metrics as P
from probekit.profiles import simulate as sim
from probekit.claims.claim import Claim, Scenario, SyntheticEvidence, row
from probekit.core.expected import COLUMNS, expected_row
from probekit.stimuli.experiments import Experiment
from probekit.pipeline import SHUFFLED_PREFIX
from probekit.studies import Study

HERE = Path(__file__).resolve().parent
EXPERIMENTS = {"colours": Experiment("colours", str(HERE / "colours.csv"), "warm vs cool colour words",
                                     paper="toy", primary=("warm",))}


class ColourDecodable(Claim):
    id = "toy.colour_decodable"
    title = "Colour warmth is decodable at some layer"
    paper = "toy paper, section 1"
    needs = ("colours",)
    key_metric = "colours.best_lower"
    reference_model = "toy-model"
    scenarios = (Scenario("null_flat", "null", "chance everywhere", dict(h=0.0)),
                 Scenario("planted", "planted", "a bump of 0.3", dict(h=0.3)))

    def measure(self, ev):
        v, reps = ev.profile("colours", "resid_pre")
        band = P.simultaneous_band(v, reps)
        return [row(ev, self, "colours.best_lower", "balanced_accuracy", float(np.max(v)), float(np.max(band.lo)),
                    float(np.max(band.hi)), "ci", "the best layer's simultaneous band")]

    def simulate(self, scenario, n_layers, rng):
        ev = SyntheticEvidence(n_layers)
        ev.profiles[("colours", "resid_pre")] = sim.observe(sim.bump(n_layers, 0.5, 0.2, scenario.params["h"]),
                                                            0.03, rng, n_boot=200)
        return ev


class ControlAtChance(Claim):
    id = "toy.control_at_chance"
    title = "The shuffled colour label stays at chance"
    paper = "toy paper, section 2"
    needs = ("colours",)
    key_metric = "colours.shuffled_min_p"
    reference_model = "toy-model"
    effect_verdict = False
    scenarios = (Scenario("null_healthy", "null", "no leakage", dict(shift=0.0)),)

    def measure(self, ev):
        s = ev.cells("colours")
        sh = s[s.label.str.startswith(SHUFFLED_PREFIX) & (s.metric == "balanced_accuracy")]
        return [row(ev, self, "colours.shuffled_min_p", "p", float(sh.p_fwer.min()) if len(sh) else np.nan)]

    def simulate(self, scenario, n_layers, rng):
        ev = SyntheticEvidence(n_layers)
        ev.tables["colours"] = sim.cell_table([SHUFFLED_PREFIX + "warm"], n_layers, rng, role="control")
        return ev


def paper_rows() -> pd.DataFrame:
    return pd.DataFrame([
        expected_row("toy-model", 4, "toy.colour_decodable", "colours.best_lower", "balanced_accuracy", "greater",
                     low=0.5, judge_on="ci_low", source="toy paper, section 1: 'warmth is decodable'"),
        expected_row("toy-model", 4, "toy.control_at_chance", "colours.shuffled_min_p", "p", "min", low=0.05,
                     source="not a number from the paper: chance level of a shuffled control"),
    ], columns=COLUMNS)


STUDY = Study(id="toy", title="A toy study (tests only)", experiments=EXPERIMENTS,
              claims=[ColourDecodable(), ControlAtChance()], paper_rows=paper_rows,
              expected_path=HERE / "expected", folder=HERE)
