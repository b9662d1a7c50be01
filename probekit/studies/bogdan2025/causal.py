"""The causal claims: do the layers the probes point at matter to the model? (issue 22, docs/causal.md)

The paper makes no causal claim; it names the causal experiments as open questions. These claims are
probekit's hypotheses derived from its probe claims, registered before any causal run, and judged like every
other claim (rule rows in :mod:`.paper`, scenarios for :mod:`probekit.claims.calibration`, the untrained
twin's rule).

``<exp>_peak_layers_matter``: mean-ablating ``attn_out`` + ``mlp_out`` over the ``k`` blocks around the
experiment's probe peak lowers its decodability at the last layer more than ablating ``k`` blocks chosen at
random does (:class:`probekit.causal.LayerSetPlan`). The test is a randomization test: with ``R`` random sets,
``p = (1 + #{random drop >= peak drop}) / (1 + R)``, exact under the null that the peak set is one more random
set (exchangeable with them), ties counted against the claim. The behavioural read-out (the texts'
log-likelihood of each text's last token under the same ablations) is measured and ranked the same way, and reported, not judged: the
claim is about what the probes point at.

The three answers. *Reproduced*: the rule passes (p <= 0.05: at most one of 39 random sets is as damaging).
*Contradicted*: the data exclude the hypothesis at its stated size, "the peak set is more damaging than
``U0 = 0.99`` of random sets" (the hypothesis that the probe peak is where the experiment's information is
made: nearly every other set of as many blocks matters less). Given the peak set's true quantile ``u`` among
random sets, the number of random sets at least as damaging is Binomial(R, 1 - u); the data exclude ``u >=
U0`` when that count's upper tail under ``1 - U0`` is <= 0.05. *Inconclusive*: neither. Power at ``U0`` and
the MDE (the quantile detected with probability 0.8) come from the same binomial. ``U0`` is an assumption
(the paper gives no causal size), fixed before any causal run.

Which of issue 22's four questions are here, and why (docs/causal.md): the peak-layer test on ``relations``
(a profile that rises from chance at the embeddings to a peak and falls: the probe peak is a located claim,
the paper's Exp 2) and on ``items`` (the paper's Exp 1, whose features the embeddings already carry: whether
its peak layers add anything is a real question). The valley test (Q1) needs a double peak, which no model
in reach shows; adjacent attention (Q2) and buried patching (Q3) are not built yet.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from probekit.causal import LayerSetPlan, drops, rank_test
from probekit.claims.claim import Claim, Scenario, SyntheticEvidence, row

S = "bogdan2025."
ALPHA = 0.05
U0 = 0.99                 # the hypothesis' size: the peak set more damaging than 99% of random sets (assumed)


@lru_cache(maxsize=None)
def rank_cuts(n_random: int, alpha: float = ALPHA, u0: float = U0) -> tuple[int, int]:
    """``(c_rep, c_con)``: reproduced when at most ``c_rep`` random sets are at least as damaging (the exact
    randomization test at ``alpha``: ``(1 + c_rep) / (1 + R) <= alpha``), contradicted when at least
    ``c_con`` are (``P(Binomial(R, 1 - u0) >= c_con) <= alpha``)."""
    from scipy.stats import binom
    c_rep = int(np.floor(alpha * (1 + n_random) + 1e-9)) - 1
    c_con = next(c for c in range(n_random + 2) if binom.sf(c - 1, n_random, 1 - u0) <= alpha)
    return c_rep, c_con


def rank_power(n_random: int, u: float, alpha: float = ALPHA) -> float:
    """P(reproduced | the peak set's true quantile among random sets is ``u``)."""
    from scipy.stats import binom
    c_rep, _ = rank_cuts(n_random, alpha)
    return float(binom.cdf(c_rep, n_random, 1 - u)) if c_rep >= 0 else 0.0


def rank_mde(n_random: int, alpha: float = ALPHA, power: float = 0.8) -> float:
    """The smallest quantile ``u`` detected with probability ``power``."""
    from scipy.optimize import brentq
    if rank_power(n_random, 1.0 - 1e-12, alpha) < power:
        return float("nan")
    return float(brentq(lambda u: rank_power(n_random, u, alpha) - power, 1e-9, 1 - 1e-12))


class PeakLayersMatter(Claim):
    """Ablating the probe peak's blocks hurts the experiment's last-layer decodability more than random blocks."""
    experiment = ""
    optional = True                      # judged only where a causal run is there (``./pk run --causal``)
    reference_model = "llama-3.2-3b"
    paper = ("open question of arXiv 2501.07359 (its probes locate; whether the model uses those layers is "
             "untested): probekit's hypothesis")

    def __init__(self, experiment: str, plan: LayerSetPlan | None = None):
        self.experiment = experiment
        self.id = f"{S}{experiment}_peak_layers_matter"
        self.title = f"Ablating the {experiment} probe peak's layers hurts its decodability more than random layers"
        self.needs = (experiment,)
        self.key_metric = f"{experiment}.peak_ablation_p"
        self.causal = plan or LayerSetPlan(experiment)
        self.scenarios = _scenarios()

    def applies(self, ev) -> bool:
        return self.id in ((getattr(ev, "causal", None) or {}).get("tests") or {})

    def measure(self, ev):
        t = ev.causal["tests"][self.id]
        e = self.experiment
        drop, ll = drops(t)                              # [0]: the peak set, then the random sets
        R = len(drop) - 1
        exceed, p, u = rank_test(drop[0], drop[1:])
        ll_exceed, ll_p, ll_u = rank_test(ll[0], ll[1:])
        q = np.quantile(drop[1:], [0.05, 0.95])
        ps = t["peak_set"]
        rl = t["readout_layer"]
        return [
            row(ev, self, f"{e}.peak_set", "layer", t["peak_layer"], min(ps), max(ps), "set",
                f"blocks {ps} ablated (k = {t['k']} around the probe peak, layer {t['peak_layer']})"),
            row(ev, self, f"{e}.readout_value", "balanced_accuracy", t["ordinary_readout"],
                detail=f"unablated decodability at resid_pre of layer {rl} (the read-out), mean over "
                       f"{', '.join(t['labels'])}"),
            row(ev, self, f"{e}.peak_ablation_drop", "balanced_accuracy", drop[0], q[0], q[1], "null",
                f"read-out drop under the peak set's ablation; interval = 5-95% of the {R} random sets' drops"),
            row(ev, self, f"{e}.random_ablation_drop_median", "balanced_accuracy", float(np.median(drop[1:])),
                detail=f"median drop over {R} random sets of {t['k']} blocks"),
            row(ev, self, f"{e}.peak_ablation_exceed", "count", exceed,
                detail=f"random sets at least as damaging as the peak set, of {R}"),
            row(ev, self, f"{e}.peak_ablation_p", "p", p,
                detail=f"randomization p = (1 + {exceed}) / (1 + {R}), exact under exchangeability"),
            row(ev, self, f"{e}.peak_ablation_quantile", "fraction", u,
                detail=f"fraction of the {R} random sets less damaging than the peak set (the effect; 0.5 "
                       f"expected under the null, hypothesis {U0})"),
            row(ev, self, f"{e}.loglik_drop", "nats", ll[0],
                detail=f"behavioural: drop in the log-likelihood of each text's {t.get('span', 'last')} token(s) "
                       f"(mean over texts) under the peak set's ablation (median over random sets "
                       f"{float(np.median(ll[1:])):.3g}); not judged"),
            row(ev, self, f"{e}.loglik_p", "p", ll_p,
                detail=f"behavioural: rank p of the peak set's log-likelihood drop among the random sets' "
                       f"((1 + {ll_exceed}) / (1 + {R})); not judged"),
            row(ev, self, f"{e}.random_sets", "count", R, detail="random layer sets ranked"),
        ]

    def answer(self, rule_passed, rows, absence=False):
        e = self.experiment
        pe, ex, n = (rows.get(f"{e}.{m}") for m in ("peak_ablation_quantile", "peak_ablation_exceed", "random_sets"))
        out = {"effect_metric": f"{e}.peak_ablation_quantile", "paper_effect": U0, "paper_size_assumed": True,
               "effect": np.nan, "effect_se": np.nan, "power_at_paper": np.nan, "mde80": np.nan, "p_effect": np.nan}
        if pe is None or ex is None or n is None:
            return {**out, "answer": "inconclusive", "answer_reason": "no causal run measured"}
        R, k = int(n["value"]), int(ex["value"])
        c_rep, c_con = rank_cuts(R)
        u = float(pe["value"])
        out.update(effect=u, effect_se=float(np.sqrt(max(u * (1 - u), 0.25 / R) / R)),
                   power_at_paper=rank_power(R, U0), mde80=rank_mde(R), p_effect=(1 + k) / (1 + R))
        if rule_passed:
            return {**out, "answer": "reproduced",
                    "answer_reason": f"{k} of {R} random sets as damaging: p = {(1 + k) / (1 + R):.3g} <= {ALPHA}"}
        if k >= c_con:
            return {**out, "answer": "contradicted",
                    "answer_reason": f"{k} of {R} random sets as damaging (>= {c_con}): the data exclude the peak set "
                                     f"being more damaging than {U0:.0%} of random sets (assumed size)"}
        return {**out, "answer": "inconclusive",
                "answer_reason": f"{k} of {R} random sets as damaging: neither <= {c_rep} (reproduced) nor >= "
                                 f"{c_con} (contradicted)"}

    def simulate(self, scenario, n_layers, rng):
        """Synthetic causal data: the random sets' drops from a skewed law on the read-out's grid (steps of
        1/``n``, the balanced accuracy of ``n`` stimuli: ties happen), the peak set's per the scenario."""
        p = scenario.params
        R, n = self.causal.n_random, p.get("n", 400)
        law = lambda size: np.round(rng.gamma(p.get("shape", 1.5), 0.02, size) * n) / n
        rand = law(R)
        if p["peak"] == "exchangeable":
            peak = float(law(1)[0])
        else:                                           # the peak set at quantile u of the random sets' law
            peak = float(np.round(np.quantile(law(20000), p["peak"]) * n) / n)
        drop = np.concatenate([[peak], rand])
        base = 0.85
        L = n_layers
        return SyntheticEvidence(L, causal={"tests": {self.id: dict(
            readout_values=list(base - drop), ordinary_readout=base, loglik_change=list(-drop),
            peak_set=[L // 3, L // 3 + 1], peak_layer=L // 3, readout_layer=L - 1, k=2, labels=["simulated"])}})


def _scenarios():
    return (
        Scenario("null_exchangeable", "null", "the peak set is one more random set: its drop drawn from the random "
                 "sets' law (the test's exact null)", dict(peak="exchangeable")),
        Scenario("null_exchangeable_coarse", "null", "the same on a coarse grid (n = 60: many ties)",
                 dict(peak="exchangeable", n=60)),
        Scenario("null_median", "null", "the peak set at the random sets' median", dict(peak=0.5)),
        Scenario("planted_u0.99", "planted", f"the peak set at quantile {U0} of the random sets' law (the "
                 f"hypothesis' size)", dict(peak=U0)),
        Scenario("planted_u0.95", "planted", "the peak set at quantile 0.95", dict(peak=0.95)),
        Scenario("planted_u0.999", "planted", "the peak set at quantile 0.999", dict(peak=0.999)),
    )


CAUSAL_CLAIMS = [PeakLayersMatter("relations"), PeakLayersMatter("items")]
