"""The way in from other tools (probekit.extraction.interop, ActivationSet.from_arrays / from_cache).

The unit tests run anywhere (tiny random models). The conformance tests run probekit against
TransformerLens (4.x's TransformerBridge, 3.x's HookedTransformer) and nnsight themselves
(benchmarks/interop_agreement.py): in the running Python when the tools import, else in venvs of their own
layered over this one (tools_python, tl3_python below; ~1 min of pip each on a cold cache), so installing
them never changes the versions the rest of the suite runs on. It skips, saying why, only
when they cannot be installed (no network and no wheels).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import probekit
from probekit.extraction import forward as ex
from probekit.core.activations import ActivationSet
from probekit.core.errors import ModelInputError, UnsupportedArchitectureError
from probekit.extraction.interop import as_loaded_model, pad_token_id, target_token_weights
from probekit.models.loading import load_model
from probekit.models.testing import make_synthetic_acts, mixed_stimuli, tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"transformer_lens": "transformer_lens==4.3.0", "nnsight": "nnsight==0.8.1"}     # docs/interop.md


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama", seed=3)


@pytest.fixture(scope="module")
def stim():
    return mixed_stimuli(9)


@pytest.fixture(scope="module")
def ref(tiny, stim):
    return probekit.extract(tiny, stim, store=None, progress=False)


def _same(a: ActivationSet, b: ActivationSet, tol=0.0):
    assert a.n_layers == b.n_layers and a.components == b.components
    for l in a.layers:
        for c in a.components:
            x, y = a.get(l, c), b.get(l, c)
            d = np.abs(x - y).max() / max(np.abs(y).max(), 1e-30)
            assert d <= tol, (l, c, d)


# --------------------------------------------------------------------------- models in

def test_hf_pair_gives_probekits_vectors(tiny, stim, ref):
    acts = probekit.extract((tiny.model, tiny.tokenizer), stim, store=None, progress=False)
    _same(acts, ref)                                 # the same hooks on the same weights: bit for bit
    lm = load_model((tiny.model, tiny.tokenizer))
    assert lm.model is tiny.model and lm.n_layers == 3
    assert as_loaded_model([tiny.model, tiny.tokenizer]).model is tiny.model
    assert as_loaded_model(tiny.model, tokenizer=tiny.tokenizer, name="mine").name == "mine"


def test_tokenizer_without_pad_token(tiny, stim, ref):
    tok = tiny_tokenizer()
    tok.pad_token = None
    assert tok.pad_token_id is None
    acts = probekit.extract((tiny.model, tok), stim, batch_size=4, store=None, progress=False)
    _same(acts, ref, tol=1e-5)                       # other batches; padding never enters a pooled vector
    assert tok.pad_token_id is None                  # the user's tokenizer is left as it was
    tok.eos_token = None
    assert pad_token_id(tok) == 0
    acts = probekit.extract((tiny.model, tok), stim, batch_size=4, store=None, progress=False)
    _same(acts, ref, tol=1e-5)


def test_identity_is_the_weights_and_the_tokenizer(tiny, stim):
    import torch
    a = as_loaded_model((tiny.model, tiny.tokenizer))
    b = as_loaded_model(tiny.model, tokenizer=tiny.tokenizer)
    assert a.fingerprint == b.fingerprint and "weights:" in a.fingerprint
    other_tok = as_loaded_model((tiny.model, tiny_tokenizer(bos=False)))
    assert other_tok.fingerprint != a.fingerprint    # other tokens: other activations
    before = a.fingerprint
    w = tiny.model.model.layers[0].mlp.down_proj.weight
    saved = w.detach().clone()
    with torch.no_grad():
        w[0, 0] += 1.0
    try:
        assert a.fingerprint != before               # edited in memory: another model to the store
    finally:
        with torch.no_grad():
            w.copy_(saved)
    assert a.fingerprint == before


def test_store_serves_a_wrapped_model_from_its_entry(tiny, stim, ref, tmp_path, monkeypatch):
    calls = []
    real = ex._forward
    monkeypatch.setattr(ex, "_forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = probekit.extract((tiny.model, tiny.tokenizer), stim, store=tmp_path, progress=False)
    n = len(calls)
    assert n > 0
    again = probekit.extract(as_loaded_model(tiny.model, tokenizer=tiny.tokenizer), stim, store=tmp_path,
                             progress=False)
    assert len(calls) == n                           # same weights + tokenizer: the same entry, no forward pass
    _same(again, ref)
    _same(first, ref)


@pytest.mark.parametrize("bad, words", [
    ("smollm2-135m", "load_model('smollm2-135m')"),
    (object(), "(transformers_model, tokenizer)"),
    ((1, 2, 3), "a tuple of 3 items"),
])
def test_anything_else_is_told_what_to_pass(bad, words, stim):
    with pytest.raises(ModelInputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        probekit.extract(bad, stim)


def test_bare_model_needs_its_tokenizer(tiny, stim):
    with pytest.raises(ModelInputError, match=r"pass \(model, tokenizer\)"):
        probekit.extract(tiny.model, stim)
    with pytest.raises(ModelInputError, match="not a transformers tokenizer"):
        probekit.extract((tiny.model, "tokenizer"), stim)
    with pytest.raises(ModelInputError, match="not a transformers model"):
        probekit.extract((object(), tiny.tokenizer), stim)
    with pytest.raises(ModelInputError, match="leave dtype/device"):
        load_model((tiny.model, tiny.tokenizer), dtype="bfloat16")


def test_meta_weights_and_unsupported_architectures_are_named(stim):
    import torch
    from transformers import AutoModelForCausalLM

    from probekit.models.testing import tiny_config
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(tiny_config("llama"))
    with pytest.raises(ModelInputError, match="meta device"):
        probekit.extract((meta, tiny_tokenizer()), stim)
    neox = tiny_model("gpt_neox", check_adapter=False)
    with pytest.raises(UnsupportedArchitectureError, match="GPTNeoX"):
        probekit.extract((neox.model, neox.tokenizer), stim)


def test_tool_objects_are_recognised_by_their_class(tiny, stim, ref):
    """nnsight's LanguageModel and TransformerLens' TransformerBridge are unwrapped to the transformers
    model they hold (the real ones: test_conformance_with_transformerlens_and_nnsight)."""
    LM = type("LanguageModel", (), {"__module__": "nnsight.modeling.language"})
    lm = LM()
    lm._module, lm.tokenizer, lm.dispatched = tiny.model, tiny.tokenizer, True
    _same(probekit.extract(lm, stim, store=None, progress=False), ref)
    Bridge = type("TransformerBridge", (), {"__module__": "transformer_lens.model_bridge.bridge"})
    br = Bridge()
    br.original_model, br.tokenizer = tiny.model, tiny.tokenizer
    _same(probekit.extract(br, stim, store=None, progress=False), ref)
    assert load_model(br).model is tiny.model and load_model(lm).model is tiny.model
    tl_tok = tiny_tokenizer()                        # as TransformerLens leaves it: reloaded with add_bos_token=True
    tl_tok.init_kwargs.update(add_bos_token=True, name_or_path="/nonexistent/checkpoint")
    br.tokenizer = tl_tok
    with pytest.raises(ModelInputError, match="cannot be reloaded.*tokenizer=TOKENIZER"):
        probekit.extract(br, stim)
    _same(probekit.extract(as_loaded_model(br, tokenizer=tiny.tokenizer), stim, store=None, progress=False), ref)
    br.compatibility_mode = True
    with pytest.raises(ModelInputError, match="compatibility mode"):
        probekit.extract(br, stim)


def test_hooked_transformer_runs_its_own_hooks(tiny, stim, ref):
    """A HookedTransformer (TransformerLens < 4) is run through its own hook points: a stand-in with TL's
    layout (cfg, blocks[l].hook_resid_pre / hook_attn_out / hook_mlp_out) over the tiny Llama's modules."""
    import torch

    class HookPoint(torch.nn.Module):
        def forward(self, x):
            return x

    class Block(torch.nn.Module):
        def __init__(self, layer, rotary):
            super().__init__()
            self.layer, self.rotary = layer, rotary
            self.hook_resid_pre, self.hook_attn_out, self.hook_mlp_out = HookPoint(), HookPoint(), HookPoint()

        def forward(self, h, mask, pos):
            h = self.hook_resid_pre(h)
            a = self.layer.self_attn(self.layer.input_layernorm(h), attention_mask=mask,
                                     position_embeddings=self.rotary(h, pos))[0]
            h = h + self.hook_attn_out(a)
            return h + self.hook_mlp_out(self.layer.mlp(self.layer.post_attention_layernorm(h)))

    HT = type("HookedTransformer", (torch.nn.Module,), {"__module__": "transformer_lens.HookedTransformer"})
    base = tiny.model.model

    class Fake(HT):
        def __init__(self):
            super().__init__()
            self.cfg = type("Cfg", (), {"n_layers": 3, "d_model": 32, "model_name": "fake-ht", "fold_ln": False})()
            self.embed = base.embed_tokens
            self.blocks = torch.nn.ModuleList(Block(l, base.rotary_emb) for l in base.layers)
            self.tokenizer = tiny.tokenizer

        def forward(self, ids, attention_mask=None, return_type=None):
            T = ids.shape[1]
            causal = torch.full((T, T), float("-inf")).triu(1)
            mask = causal + (1.0 - attention_mask[:, None, None, :].float()) * -1e9
            pos = torch.arange(T)[None].expand(ids.shape[0], T)
            h = self.embed(ids)
            for b in self.blocks:
                h = b(h, mask, pos)

    fake = Fake()
    m = as_loaded_model(fake)
    assert m.runs_own_hooks and "HookedTransformer:fake-ht" in m.fingerprint and "processed:none" in m.fingerprint
    _same(probekit.extract(fake, stim, batch_size=4, store=None, progress=False), ref, tol=1e-5)


# --------------------------------------------------------------------------- activations in

@pytest.fixture(scope="module")
def synth():
    return make_synthetic_acts(n_groups=16, per_group=4, d=12, n_layers=3, n_binary=1, n_continuous=0, seed=2)


def test_from_arrays_takes_every_key_form(synth):
    import torch
    L, comps = synth.n_layers, synth.components
    forms = [
        {(l, c): synth.get(l, c) for l in range(L) for c in comps},
        {(l, f"hook_{c}"): synth.get(l, c) for l in range(L) for c in comps},
        {f"blocks.{l}.hook_{c}": torch.from_numpy(synth.get(l, c).copy()) for l in range(L) for c in comps},
        {c: np.stack([synth.get(l, c) for l in range(L)]) for c in comps},
        {f"hook_{c}": torch.from_numpy(np.stack([synth.get(l, c) for l in range(L)])) for c in comps},
    ]
    for arrays in forms:
        _same(ActivationSet.from_arrays(arrays, synth.stimuli), synth)


@pytest.mark.parametrize("arrays, match", [
    ({"blocks.0.hook_resid_pre": 0, "blocks.2.hook_resid_pre": 0}, r"resid_pre lacks layer\(s\) 1"),
    ({"blocks.1.hook_resid_pre": 0, "blocks.2.hook_resid_pre": 0}, r"resid_pre lacks layer\(s\) 0"),
    ({"blocks.0.hook_resid_pre": 0, "blocks.1.hook_resid_pre": 0, "blocks.0.hook_mlp_out": 0},
     r"mlp_out lacks layer\(s\) 1"),
    ({"blocks.0.hook_resid_post": 0}, "not an activation key"),
    ({(0, "resid"): 0}, "not an activation key"),
    ({"resid_pre": "2d"}, r"stacked \[L, n_stimuli, d_model\]"),
    ({(0, "resid_pre"): 0, "blocks.0.hook_resid_pre": 0}, "given twice"),
    ({(0, "resid_pre"): "tokens"}, "need pooling; pass weights="),
    ({(0, "resid_pre"): "rows"}, "rows but stimuli has"),
    ({(0, "resid_pre"): 0, (0, "mlp_out"): "wide"}, "has shape"),
    ({}, "no activations"),
])
def test_from_arrays_names_what_is_wrong(synth, arrays, match):
    n = len(synth)
    make = {0: np.zeros((n, 4)), "2d": np.zeros((n, 4)), "tokens": np.zeros((n, 5, 4)),
            "rows": np.zeros((n + 1, 4)), "wide": np.zeros((n, 5))}
    with pytest.raises(ValueError, match=match):
        ActivationSet.from_arrays({k: make[v] for k, v in arrays.items()}, synth.stimuli)


def test_from_cache_keeps_the_three_components(synth):
    cache = {f"blocks.{l}.{h}": np.zeros((len(synth), 12)) for l in range(3)
             for h in ("hook_resid_mid", "attn.hook_z", "ln1.hook_normalized")}
    cache |= {f"blocks.{l}.hook_resid_pre": synth.get(l, "resid_pre") for l in range(3)}
    cache["hook_embed"] = np.zeros((len(synth), 12))
    acts = ActivationSet.from_cache(cache, synth.stimuli)
    assert acts.components == ("resid_pre",) and acts.meta["source"] == "from_cache"
    with pytest.raises(ValueError, match="none of blocks"):
        ActivationSet.from_cache({"blocks.0.hook_resid_mid": np.zeros((3, 2))}, synth.stimuli)
    with pytest.raises(KeyError, match="components=\\['resid_pre'\\]"):
        acts.get(0, "attn_out")


def test_probe_grid_on_a_subset_of_components(synth):
    from probekit.probes.grid import probe_grid
    sub = ActivationSet.from_arrays({(l, "resid_pre"): synth.get(l, "resid_pre") for l in synth.layers},
                                    synth.stimuli)
    kw = dict(n_permutations=5, n_bootstrap=20, n_control=1)
    a = probe_grid(sub, **kw).scores
    b = probe_grid(synth, components=["resid_pre"], **kw).scores
    assert set(a.component) == {"resid_pre"}
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_target_token_weights_pool_a_cache_exactly_as_extract(tiny, stim, ref):
    """Your own forward pass (here: output_hidden_states), pooled with probekit's weights."""
    import torch
    for pooling in ("target_mean", "last_token"):
        want = ref if pooling == "target_mean" else probekit.extract(tiny, stim, pooling, store=None, progress=False)
        tw = target_token_weights(tiny.tokenizer, stim, pooling)
        assert tw.input_ids.shape == tw.weights.shape and np.allclose(tw.weights.sum(1), 1)
        assert (tw.weights[tw.attention_mask == 0] == 0).all()
        with torch.no_grad():
            hs = tiny.model.model(input_ids=torch.tensor(tw.input_ids), attention_mask=torch.tensor(tw.attention_mask),
                                  output_hidden_states=True).hidden_states
        acts = ActivationSet.from_cache({f"blocks.{l}.hook_resid_pre": hs[l] for l in range(3)}, stim, weights=tw)
        assert acts.pooling == pooling and "n_target_tokens" in acts.stimuli
        for l in range(3):
            got, exp = acts.get(l, "resid_pre"), want.get(l, "resid_pre")
            assert np.abs(got - exp).max() / np.abs(exp).max() <= 1e-5, (pooling, l)
    with pytest.raises(ValueError, match="expected \\[n_stimuli"):
        tw.pool(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="run the whole input_ids"):
        tw.pool(np.zeros((len(stim), 1, 4)))
    with pytest.raises(ValueError, match="target word 'zebra'"):
        target_token_weights(tiny.tokenizer, pd.DataFrame({"text": ["An apple"], "target": ["zebra"]}))


# --------------------------------------------------------------------------- the tools themselves

def _importable(python: str, code: str) -> bool:
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def _overlay_venv(name: str, packages: list[str], check: str) -> tuple[str | None, str]:
    """``$PROBEKIT_CACHE/<name>``: a venv that sees this one's packages (torch, transformers, ...: a .pth
    file) and adds ``packages``, with this venv's versions as pip constraints: the main suite's versions
    never change, and the tools run on the same torch/transformers as the suite."""
    from probekit.models.registry import cache_dir
    d = cache_dir() / name
    py = d / "bin" / "python"
    if py.exists() and _importable(str(py), check):
        return str(py), ""
    import venv
    venv.EnvBuilder(with_pip=True, clear=True).create(d)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "_probekit_base.pth").write_text(
        f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    from importlib.metadata import version
    pins = [f"{p}=={version(p)}" for p in ("torch", "transformers", "numpy", "pandas", "tokenizers",
                                         "scikit-learn", "safetensors", "accelerate")]
    (d / "constraints.txt").write_text("\n".join(pins) + "\n")
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c",
                        str(d / "constraints.txt"), *packages], capture_output=True, text=True)
    if r.returncode != 0 or not _importable(str(py), check):
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return None, f"pip install {' '.join(packages)} into {d} failed: {tail[0]}"
    return str(py), ""


def _tools(name: str, packages: list[str], check: str) -> str:
    if _importable(sys.executable, check):
        return sys.executable
    py, why = _overlay_venv(name, packages, check)
    if py is None:
        pytest.skip(f"{' '.join(packages)} not installable here, conformance not checked: {why}")
    return py


@pytest.fixture(scope="module")
def tools_python():
    """A Python where TransformerLens >= 4 (TransformerBridge) and nnsight import."""
    return _tools("interop-venv", list(TOOLS.values()), "import transformer_lens.model_bridge, nnsight")


@pytest.fixture(scope="module")
def tl3_python():
    """A Python where TransformerLens 3.x (HookedTransformer) imports."""
    return _tools("interop-venv-tl3", ["transformer_lens==3.9.0"],
                  "from transformer_lens import HookedTransformer")


def _agreement(python: str, tmp_path, *args) -> dict:
    out = tmp_path / "agreement.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    r = subprocess.run([python, str(ROOT / "benchmarks" / "interop_agreement.py"), *args, "--json", str(out)],
                       capture_output=True, text=True, env=env, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_conformance_with_transformerlens_and_nnsight(tools_python, tmp_path):
    """probekit's three components against TransformerLens' and nnsight's own hooks, fp32, with and
    without padding, on tiny Llama / Qwen2 / Gemma-3 models and SmolLM2-135M; scikit-learn on
    TransformerLens activations with probe_grid's folds; the docs' TL cache -> claims table example."""
    res = _agreement(tools_python, tmp_path, "--docs-example")
    models = {m["model"]: m for m in res["models"]}
    assert set(models) == {"tiny-llama", "tiny-qwen2", "tiny-gemma3_text", "smollm2-135m"}
    for m in models.values():
        assert len(m["rows"]) == 15                    # 3 adapters + 2 tools x 3 components x padded/unpadded
        bad = {k: v for k, v in m["rows"].items() if not v <= 1e-5}
        assert not bad, (m["model"], bad)
    bos = models["smollm2-135m"]["conventions"]
    assert min(bos.values()) > 0.05                    # to_tokens' BOS moves pooled resid_pre: documented
    gem = models["tiny-gemma3_text"]["conventions"]
    assert min(gem.values()) > 0.1                     # nnsight's raw module outputs: before the post norms
    sk = res["sklearn"]
    assert sk["cells"] >= 2 * 30 and sk["max_abs_diff_balanced_accuracy"] <= 1e-12
    ex_ = res["docs_example"]
    assert ex_["lines_of_code"] <= 10 and ex_["claims_table_rows"] > 0


@pytest.mark.slow
def test_conformance_with_hookedtransformer(tl3_python, tmp_path):
    """extract(HookedTransformer): TransformerLens 3.x's own forward pass and hooks on SmolLM2-135M, and its
    cache pooled with target_token_weights, against probekit's extraction."""
    res = _agreement(tl3_python, tmp_path, "--hooked")
    rows = res["models"][0]["rows"]
    assert res["env"]["transformer_lens"].startswith("3.") and len(rows) == 7
    bad = {k: v for k, v in rows.items() if not v <= 1e-5}
    assert not bad, bad
