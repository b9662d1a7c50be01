"""Pooling hooks: every block's ``resid_pre`` / ``attn_out`` / ``mlp_out``, pooled on the device.

:class:`Hooks` registers, on every block of a transformers causal LM (through its adapter,
:mod:`probekit.models.adapters`), a forward pre-hook (``resid_pre``: the block's input) and forward hooks on
the attention and MLP sublayers (what each adds to the residual stream). Each hook multiplies the
``[batch, tokens]`` pooling weights (``hooks.weights``, set per batch) into its ``[batch, tokens, d_model]``
activation, so no per-position tensor outlives it, and writes ``hooks.out[(layer, component)]``.
:class:`OwnHooks` pools the same way through a model's own hook points (a TransformerLens
``HookedTransformer``); :func:`check_finite` refuses NaN/inf pooled vectors, naming the layer, the component
and the stimulus. The in-memory pass and the layer-streamed runner use both.
"""
from __future__ import annotations

import pandas as pd

from probekit.core.checks import check_activation_range
from probekit.extraction.batching import ExtractionError, describe_stimulus
from probekit.models.adapters import adapter_for, blocks, sublayer


class Hooks:
    """Registers pooling hooks on every block; each writes into ``self.out[(layer, component)]``."""

    def __init__(self, model, with_final: bool = False):
        self.model = model
        self.weights = None           # torch [B, T] on the device, set per batch
        self.out: dict = {}
        self.handles = []
        self.with_final = with_final
        adapter = adapter_for(model)
        for l, block in enumerate(blocks(model)):
            self.handles.append(block.register_forward_pre_hook(self._pre(l), with_kwargs=True))
            self.handles.append(sublayer(block, adapter.attn).register_forward_hook(self._post(l, "attn_out")))
            self.handles.append(sublayer(block, adapter.mlp).register_forward_hook(self._post(l, "mlp_out")))
        if with_final:
            last = blocks(model)[-1]
            self.handles.append(last.register_forward_hook(self._post(len(blocks(model)) - 1, "resid_post")))

    def _pool(self, key, h):
        import torch
        if isinstance(h, (tuple, list)):
            h = h[0]
        w = self.weights.to(h.dtype)
        pooled = torch.bmm(w.unsqueeze(1), h).squeeze(1).float()
        self.out[key] = pooled

    def _pre(self, layer):
        def hook(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            self._pool((layer, "resid_pre"), h)
        return hook

    def _post(self, layer, comp):
        def hook(module, args, output):
            self._pool((layer, comp), output)
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


class OwnHooks(Hooks):
    """The same pooling through a model's own hook points (a TransformerLens ``HookedTransformer``:
    ``blocks.{l}.hook_resid_pre`` / ``hook_attn_out`` / ``hook_mlp_out``, see :mod:`probekit.extraction.interop`)."""

    def __init__(self, runner):
        self.model, self.runner = runner.model, runner
        self.weights, self.out, self.handles, self.with_final = None, {}, [], False
        for l, comp, point in runner.hook_points():
            self.handles.append(point.register_forward_hook(self._post(l, comp)))


def hooks_for(model, with_final: bool = False) -> Hooks:
    if getattr(model, "runs_own_hooks", False):
        if with_final:
            raise ExtractionError(f"model {model.name}: capture(with_final=True) needs a transformers model")
        return OwnHooks(model)
    return Hooks(model.model, with_final=with_final)



def check_finite(out: dict, rows: list[int], stimuli: pd.DataFrame, model_name: str) -> None:
    import torch
    for (l, c), t in out.items():
        bad = ~torch.isfinite(t).all(dim=1)
        if bool(bad.any()):
            i = rows[int(bad.nonzero()[0, 0])]
            raise ExtractionError(f"model {model_name}: non-finite activations (NaN/inf) at layer {l} {c} for "
                                  f"{describe_stimulus(i, stimuli)}in a float16 model usually overflow (load it with "
                                  f"dtype='bfloat16' or 'float32'); in bfloat16 or float32 the weights themselves "
                                  f"hold NaN/inf or overflow (check them: torch.isfinite on each parameter)")
    check_activation_range(out, rows, model_name, lambda i: describe_stimulus(i, stimuli))   # finite but absurd too
