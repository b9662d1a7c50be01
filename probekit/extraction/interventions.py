"""Interventions, as data: ablations, block swaps and activation patching, applied through hooks.

An :class:`Intervention` is a tuple of steps, each a frozen dataclass with a stable :meth:`key` string (the
activation store keys an intervened run by it; the empty intervention has the key ``""`` and is the
ordinary model):

* :class:`ZeroAblation` (``zero(attn_out@3,4)``): the sublayer's output (what it adds to the residual
  stream, the module of the extraction hooks: :mod:`probekit.models.adapters`) replaced by zeros at every
  position, at each of the layers;
* :class:`MeanAblation` (``mean(mlp_out@3)``): replaced by its mean over every real token of every stimulus
  of the set being run (computed in a first, unintervened pass) or by ``means`` given (``{layer: vector}``;
  the key then holds their digest);
* :class:`ResampleAblation` (``resample(attn_out@3;seed=0)``): replaced, for stimulus ``i``, by the mean
  over the real tokens of another stimulus ``donor(i)`` (a seeded derangement of the set; first pass as for
  the mean). It is position-free: texts of different lengths have no common positions to resample;
* :class:`SwapBlocks` (``swap(4,5)``): blocks ``l`` and ``l+1`` run in swapped order (Lad et al. 2024),
  each with its own attention type (mask, rotary table: ``config.layer_types`` is swapped with them);
* :class:`PatchResidual` (``patch(resid_pre@3[-1];donor=7)``): the residual stream entering block
  ``layer`` at token ``position`` (negative: from each text's end) replaced by the donor stimulus's value
  there in an unintervened first pass; ``donor`` is one row index for every stimulus, or one per stimulus.

Layers are positions in the stack as it runs (after a swap, layer ``l`` is the block that runs ``l``-th),
and the pooled ``resid_pre`` / ``attn_out`` / ``mlp_out`` are those of the intervened model (an ablated
sublayer pools to zero), so the residual identity holds under every intervention. First passes (mean,
resample, patch) run the unintervened model over the rows they need, with the same batches.

:func:`check` refuses bad input in one line before any forward pass; :func:`prepare` runs the first passes;
:class:`Applied` installs the hooks (and the swap) for one run and removes them after it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from probekit.core.activations import COMPONENTS
from probekit.extraction.batching import Encoded, ExtractionError
from probekit.models.adapters import adapter_for, base_model, blocks, sublayer

__all__ = ["InterventionError", "ABLATABLE", "ZeroAblation", "MeanAblation", "ResampleAblation", "SwapBlocks",
           "PatchResidual", "Intervention", "as_intervention", "check", "prepare", "Applied",
           "first_pass_rows"]

#: the components an ablation can replace (``resid_pre`` is patched, not ablated)
ABLATABLE = ("attn_out", "mlp_out")


class InterventionError(ExtractionError):
    """An intervention that cannot run on this model or stimulus set; the message names the step and the fix."""


def _layers(layers, what: str) -> tuple[int, ...]:
    if isinstance(layers, (int, np.integer)):
        layers = (layers,)
    try:
        out = tuple(sorted({int(l) for l in layers}))
    except (TypeError, ValueError):
        raise InterventionError(f"{what}: layers must be integers, got {layers!r}") from None
    if not out:
        raise InterventionError(f"{what}: no layers given (an ablation needs at least one layer)")
    return out


def _component(component, kind: str) -> str:
    if component not in ABLATABLE:
        raise InterventionError(f"{kind} ablation: unknown component {component!r}; use one of {ABLATABLE} "
                                f"(resid_pre is patched with PatchResidual)")
    return component


def _fmt(layers) -> str:
    return ",".join(str(l) for l in layers)


@dataclass(frozen=True)
class ZeroAblation:
    component: str
    layers: tuple[int, ...]
    kind = "zero"

    def __post_init__(self):
        object.__setattr__(self, "component", _component(self.component, self.kind))
        object.__setattr__(self, "layers", _layers(self.layers, f"{self.kind}({self.component})"))

    def key(self) -> str:
        return f"zero({self.component}@{_fmt(self.layers)})"


@dataclass(frozen=True)
class MeanAblation:
    """The sublayer's output replaced by a mean: over every real token of the set (computed in a first pass,
    or ``means={layer: [d]}``), or, ``by_position=True``, by the mean *at each token position* over the
    set's texts that have it (``means={layer: [positions, d]}``, e.g. from
    :func:`probekit.extraction.readout.set_means`). The position-wise mean keeps what a model writes at
    one position only, such as the massive activation of an attention-sink token: a mean pooled over
    positions spreads it to every token (docs/causal.md)."""
    component: str
    layers: tuple[int, ...]
    means: Mapping | None = field(default=None, compare=False, repr=False)
    by_position: bool = False
    kind = "mean"

    def __post_init__(self):
        object.__setattr__(self, "component", _component(self.component, self.kind))
        object.__setattr__(self, "layers", _layers(self.layers, f"{self.kind}({self.component})"))
        if self.by_position and self.means is None:
            raise InterventionError(f"{self.key_base()}: by_position needs the means given ({{layer: [positions, "
                                    f"d_model]}}, e.g. readout.set_means(..., by_position=True))")
        if self.means is not None:
            shape = (lambda v: np.asarray(v, np.float32)) if self.by_position else \
                (lambda v: np.asarray(v, np.float32).reshape(-1))
            means = {int(l): shape(v) for l, v in dict(self.means).items()}
            missing = [l for l in self.layers if l not in means]
            if missing:
                raise InterventionError(f"{self.key_base()}: means given without layer(s) {_fmt(missing)}; give one "
                                        f"{'[positions, d] array' if self.by_position else 'vector'} per ablated "
                                        f"layer, or none (computed over the stimulus set)")
            if self.by_position and any(means[l].ndim != 2 for l in self.layers):
                raise InterventionError(f"{self.key_base()}: by_position means must be [positions, d_model] arrays")
            object.__setattr__(self, "means", {l: means[l] for l in self.layers})

    def key_base(self) -> str:
        return f"{'posmean' if self.by_position else 'mean'}({self.component}@{_fmt(self.layers)}"

    def key(self) -> str:
        if self.means is None:
            return self.key_base() + ")"
        h = hashlib.sha256()
        for l in self.layers:
            h.update(f"{l}:".encode())
            h.update(np.ascontiguousarray(self.means[l], np.float32).tobytes())
        return self.key_base() + f";means={h.hexdigest()[:16]})"


@dataclass(frozen=True)
class ResampleAblation:
    component: str
    layers: tuple[int, ...]
    seed: int = 0
    kind = "resample"

    def __post_init__(self):
        object.__setattr__(self, "component", _component(self.component, self.kind))
        object.__setattr__(self, "layers", _layers(self.layers, f"{self.kind}({self.component})"))
        object.__setattr__(self, "seed", int(self.seed))

    def key(self) -> str:
        return f"resample({self.component}@{_fmt(self.layers)};seed={self.seed})"

    def donors(self, n: int) -> np.ndarray:
        """Row ``i``'s donor: a seeded permutation of ``range(n)`` without fixed points."""
        perm = np.random.default_rng(self.seed).permutation(n)
        for i in range(n):                     # a fixed point trades donors with its neighbour (in order:
            if perm[i] == i:                   # neither becomes a fixed point, nor does an earlier row)
                j = (i + 1) % n
                perm[i], perm[j] = perm[j], perm[i]
        return perm


@dataclass(frozen=True)
class SwapBlocks:
    first: int
    second: int
    kind = "swap"

    def __post_init__(self):
        a, b = int(self.first), int(self.second)
        if abs(a - b) != 1:
            raise InterventionError(f"swap({self.first},{self.second}): only adjacent blocks can be swapped "
                                    f"(layers l and l+1)")
        object.__setattr__(self, "first", min(a, b))
        object.__setattr__(self, "second", max(a, b))

    def key(self) -> str:
        return f"swap({self.first},{self.second})"


@dataclass(frozen=True)
class PatchResidual:
    layer: int
    position: int
    donor: int | tuple[int, ...]
    kind = "patch"

    def __post_init__(self):
        object.__setattr__(self, "layer", int(self.layer))
        object.__setattr__(self, "position", int(self.position))
        d = self.donor
        if isinstance(d, (int, np.integer)):
            object.__setattr__(self, "donor", int(d))
        else:
            object.__setattr__(self, "donor", tuple(int(x) for x in d))

    def key(self) -> str:
        if isinstance(self.donor, int):
            donor = str(self.donor)
        else:
            donor = "rows:" + hashlib.sha256(np.asarray(self.donor, np.int64).tobytes()).hexdigest()[:16]
        return f"patch(resid_pre@{self.layer}[{self.position}];donor={donor})"

    def donors(self, n: int) -> np.ndarray:
        return np.full(n, self.donor) if isinstance(self.donor, int) else np.asarray(self.donor, np.int64)


STEPS = (ZeroAblation, MeanAblation, ResampleAblation, SwapBlocks, PatchResidual)


@dataclass(frozen=True)
class Intervention:
    """An ordered tuple of steps; ``Intervention.none()`` (no steps) is the ordinary model."""
    steps: tuple = ()

    def __post_init__(self):
        steps = tuple(self.steps)
        for s in steps:
            if not isinstance(s, STEPS):
                raise InterventionError(f"intervention step {s!r} is not one of "
                                        f"{', '.join(c.__name__ for c in STEPS)}")
        swapped = [l for s in steps if isinstance(s, SwapBlocks) for l in (s.first, s.second)]
        if len(swapped) != len(set(swapped)):
            raise InterventionError(f"intervention {'+'.join(s.key() for s in steps)}: two swaps share a layer; "
                                    f"swaps must be of disjoint pairs")
        object.__setattr__(self, "steps", steps)

    @classmethod
    def none(cls) -> "Intervention":
        return cls(())

    def __bool__(self) -> bool:
        return bool(self.steps)

    def key(self) -> str:
        """Stable string: the steps' keys in order, joined by ``+`` (``""`` for none)."""
        return "+".join(s.key() for s in self.steps)

    def __str__(self) -> str:
        return self.key() or "none"

    def order(self, n_layers: int) -> list[int]:
        """Which block runs at each position (the identity unless a swap)."""
        order = list(range(n_layers))
        for s in self.steps:
            if isinstance(s, SwapBlocks):
                order[s.first], order[s.second] = order[s.second], order[s.first]
        return order


def as_intervention(x) -> Intervention | None:
    """``None`` / ``()`` / an empty :class:`Intervention` -> ``None`` (the ordinary run); a step or a sequence
    of steps -> an :class:`Intervention`."""
    if x is None:
        return None
    if isinstance(x, Intervention):
        return x if x else None
    if isinstance(x, STEPS):
        return Intervention((x,))
    if isinstance(x, (tuple, list)):
        iv = Intervention(tuple(x))
        return iv if iv else None
    raise InterventionError(f"intervention must be an Intervention, a step ({', '.join(c.__name__ for c in STEPS)}) "
                            f"or a tuple of steps, got {type(x).__name__}")


# ----------------------------------------------------------------------------- checks (before any pass)

def check(iv: Intervention, model, lengths: Sequence[int]) -> None:
    """Refuse, in one line, what cannot run: a model without an adapter (or one that runs its own hooks), a
    layer out of range, a donor out of range, a token position some text lacks, means of the wrong size."""
    if getattr(model, "runs_own_hooks", False):
        raise InterventionError(f"model {model.name}: interventions hook a transformers model through its adapter; "
                                f"this one runs its own hooks (TransformerLens): pass the transformers model "
                                f"(e.g. its Hugging Face checkpoint) instead")
    adapter_for(model.model)           # an architecture without an adapter: UnsupportedArchitectureError
    L, n, d = model.n_layers, len(lengths), model.d_model
    for s in iv.steps:
        where = f"intervention {s.key()} on model {model.name}"
        layers = (s.first, s.second) if isinstance(s, SwapBlocks) else \
            (s.layer,) if isinstance(s, PatchResidual) else s.layers
        bad = [l for l in layers if not 0 <= l < L]
        if bad:
            raise InterventionError(f"{where}: layer {bad[0]} out of range (the model has layers 0..{L - 1})")
        if isinstance(s, MeanAblation) and s.means is not None:
            wrong = [l for l, v in s.means.items() if v.shape[-1:] != (d,) or (not s.by_position and v.ndim != 1)]
            if wrong:
                raise InterventionError(f"{where}: the mean for layer {wrong[0]} has shape "
                                        f"{s.means[wrong[0]].shape}, d_model is {d}")
            if s.by_position:
                short = min(len(v) for v in s.means.values())
                if max(lengths) > short:
                    raise InterventionError(f"{where}: the position-wise means cover {short} positions, a text has "
                                            f"{max(lengths)} tokens (compute them over this set)")
        if isinstance(s, ResampleAblation) and n < 2:
            raise InterventionError(f"{where}: resampling needs at least 2 stimuli (got {n})")
        if isinstance(s, PatchResidual):
            donors = s.donors(n)
            if donors.shape != (n,):
                raise InterventionError(f"{where}: {donors.size} donors given for {n} stimuli (give one row "
                                        f"index, or one per stimulus)")
            out = np.flatnonzero((donors < 0) | (donors >= n))
            if out.size:
                raise InterventionError(f"{where}: donor index {donors[out[0]]} out of range (stimulus {out[0]}; "
                                        f"the set has rows 0..{n - 1})")
            p = s.position
            for i in range(n):
                for row, role in ((i, "stimulus"), (int(donors[i]), "donor")):
                    if not -lengths[row] <= p < lengths[row]:
                        raise InterventionError(f"{where}: token position {p} is outside {role} {row} "
                                                f"({lengths[row]} tokens)")


# ----------------------------------------------------------------------------- first passes

def first_pass_rows(iv: Intervention, n: int) -> list[int]:
    """The rows a first pass must run (none when no step needs one)."""
    need: set[int] = set()
    for s in iv.steps:
        if isinstance(s, ResampleAblation) or isinstance(s, MeanAblation) and s.means is None:
            return list(range(n))
        if isinstance(s, PatchResidual):
            need.update(int(d) for d in s.donors(n))
    return sorted(need)


class _Sink:
    """Swallows a runner's writes for a (layer, component) a first pass does not need."""

    def __setitem__(self, idx, value) -> None:
        pass


class _Keep(dict):
    """A runner's ``arrays`` keeping only ``keys`` (the rest go to a sink: no N x L x 3 x d of memory)."""

    def __init__(self, keys, n: int, d: int):
        super().__init__({k: np.zeros((n, d), np.float32) for k in keys})
        self._sink = _Sink()

    def __missing__(self, key):
        return self._sink


def pass_over(runner, model, enc: Encoded, chunks, stimuli, rows: list[int], weights: list[np.ndarray], keys) -> dict:
    """One unintervened pass over ``rows`` (the run's own batches, restricted to them) pooling with
    ``weights``; returns ``{(layer, component): [n, d]}`` for ``keys``."""
    keep = set(rows)
    sub = [[b2 for b2 in ([i for i in b if i in keep] for b in chunk) if b2] for chunk in chunks]
    sub = [c for c in sub if c]
    arrays = _Keep(keys, len(enc.input_ids), model.d_model)
    runner(model, Encoded(enc.input_ids, weights, enc.n_target_tokens), sub, stimuli, arrays, done=set(),
           on_chunk=None, progress=False, intervention=None, standalone=True)
    return {k: arrays[k] for k in keys}


def token_mean(row_means: np.ndarray, lengths) -> np.ndarray:
    """The mean over every real token of the set from each row's token mean ([n, d]) and its length."""
    tok = np.asarray(lengths, np.float64)
    return (row_means * tok[:, None]).sum(0).astype(np.float32) / tok.sum()


@dataclass
class Prepared:
    """What the hooks replace: per step, the vectors of its first pass."""
    iv: Intervention
    values: list            # per step: None | [d] (mean) | [n, d] per row (resample, patch)
    positions: list         # per step: None | per row the token index patched


def prepare(iv: Intervention, model, enc: Encoded, chunks, stimuli, runner) -> Prepared:
    """Run the first passes ``iv`` needs (one pass in all, over the rows any step needs) with ``runner`` (the
    in-memory or the streamed one) and return the vectors each step's hooks will use."""
    n = len(enc.input_ids)
    lengths = [len(x) for x in enc.input_ids]
    rows = first_pass_rows(iv, n)
    need_mean = [s for s in iv.steps if isinstance(s, ResampleAblation) or isinstance(s, MeanAblation) and s.means is None]
    patches = [s for s in iv.steps if isinstance(s, PatchResidual)]
    means, at = {}, {}
    if need_mean:       # per stimulus: the token mean of the component (pooling weights 1/length)
        keys = sorted({(l, s.component) for s in need_mean for l in s.layers})
        means = pass_over(runner, model, enc, chunks, stimuli, rows,
                      [np.full(m, 1.0 / m, np.float32) for m in lengths], keys)
    for p in {s.position for s in patches}:   # per stimulus: the stream at the token (one-hot weights)
        w = []
        for m in lengths:
            x = np.zeros(m, np.float32)
            x[p if p >= 0 else m + p] = 1.0
            w.append(x)
        keys = sorted({(s.layer, "resid_pre") for s in patches if s.position == p})
        at[p] = pass_over(runner, model, enc, chunks, stimuli, rows, w, keys)
    values, positions = [], []
    for s in iv.steps:
        pos = None
        if isinstance(s, ZeroAblation) or isinstance(s, SwapBlocks):
            v = None
        elif isinstance(s, MeanAblation):
            v = s.means if s.means is not None else {l: token_mean(means[(l, s.component)], lengths) for l in s.layers}
        elif isinstance(s, ResampleAblation):
            d = s.donors(n)
            v = {l: means[(l, s.component)][d] for l in s.layers}
        else:
            v = at[s.position][(s.layer, "resid_pre")][s.donors(n)]
            pos = np.array([s.position if s.position >= 0 else m + s.position for m in lengths])
        values.append(v)
        positions.append(pos)
    return Prepared(iv, values, positions)


# ----------------------------------------------------------------------------- hooks

def _swap_entries(seq, order) -> list:
    return [seq[o] for o in order]


class Applied:
    """``with Applied(torch_model, prepared):`` the intervention's hooks (registered before any pooling
    hook runs: ``prepend=True``) and its block order are in place; :meth:`batch` says which rows the next
    batch holds. Enter it before the pooling hooks are registered (they label blocks by position)."""

    def __init__(self, model, prepared: Prepared):
        self.model, self.p = model, prepared
        self.rows = None
        self.handles = []
        self.order = prepared.iv.order(len(blocks(model)))

    def batch(self, rows) -> None:
        self.rows = np.asarray(rows)

    def source(self, position: int) -> int:
        """The checkpoint block that runs at ``position``."""
        return self.order[position]

    def _reorder(self, order) -> None:
        blist = blocks(self.model)
        mods = [blist[o] for o in order]
        for i, m in enumerate(mods):
            blist[i] = m
        cfg = base_model(self.model).config
        types = getattr(cfg, "layer_types", None)
        if isinstance(types, list) and len(types) == len(order):
            cfg.layer_types = _swap_entries(types, order)

    def __enter__(self):
        if self.order != sorted(self.order):
            self._reorder(self.order)          # each block keeps its own attention type (layer_types moves)
        blist = blocks(self.model)
        ad = adapter_for(self.model)
        try:
            for s, v, pos in zip(self.p.iv.steps, self.p.values, self.p.positions):
                if isinstance(s, (ZeroAblation, MeanAblation, ResampleAblation)):
                    path = ad.attn if s.component == "attn_out" else ad.mlp
                    for l in s.layers:
                        self.handles.append(sublayer(blist[l], path).register_forward_hook(
                            self._ablate(s, None if v is None else v[l]), prepend=True))
                elif isinstance(s, PatchResidual):
                    self.handles.append(blist[s.layer].register_forward_pre_hook(
                        self._patch(v, pos), with_kwargs=True, prepend=True))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        if self.order != sorted(self.order):
            inverse = [self.order.index(i) for i in range(len(self.order))]
            self._reorder(inverse)
            self.order = list(range(len(self.order)))

    def _ablate(self, step, value):
        import torch

        def hook(module, args, output):
            h = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(step, ZeroAblation):
                new = torch.zeros_like(h)
            elif isinstance(step, MeanAblation):
                v = value[:h.shape[-2]] if step.by_position else value     # [T, d] per position, or [d]
                new = torch.from_numpy(np.ascontiguousarray(v)).to(device=h.device, dtype=h.dtype).expand_as(h).clone()
            else:                              # resample: the batch's rows' donors
                v = torch.from_numpy(value[self.rows]).to(device=h.device, dtype=h.dtype)
                new = v[:, None, :].expand_as(h).clone()
            if isinstance(output, (tuple, list)):
                return (new,) + tuple(output[1:])
            return new
        return hook

    def _patch(self, value, pos):
        import torch

        def hook(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            h = h.clone()
            v = torch.from_numpy(value[self.rows]).to(device=h.device, dtype=h.dtype)
            idx = torch.as_tensor(pos[self.rows], device=h.device)
            h[torch.arange(len(self.rows), device=h.device), idx] = v
            if args:
                return (h,) + tuple(args[1:]), kwargs
            return args, dict(kwargs, hidden_states=h)
        return hook


def components_of(iv: Intervention) -> tuple[str, ...]:
    """The components the intervention's steps touch (for docs and reports)."""
    out = []
    for s in iv.steps:
        c = getattr(s, "component", "resid_pre" if isinstance(s, PatchResidual) else None)
        if c and c not in out:
            out.append(c)
    return tuple(c for c in COMPONENTS if c in out)
