"""Where a model runs and in which dtype: one small rule, stated, with the reason shown to the user.

``plan_placement(config, device="auto", dtype="auto", stream_layers=None)`` returns a
:class:`Placement`. The rule (``W(dtype)`` = bytes of the weights probekit loads:
parameters x bytes per element; the LM head is never used but is counted when untied,
because ``from_pretrained`` loads it):

* **device** ``auto``: ``cuda`` when a GPU is visible, else ``cpu``. With several GPUs
  and a model that does not fit one of them but fits all together, ``device_map="auto"``
  over the GPUs only (never CPU offload, which re-reads weights for every batch).
* **dtype** ``auto``: on CUDA ``bfloat16`` (``float16`` on GPUs without bf16, with the
  overflow check of extraction as the guard); on the CPU ``float32`` when
  ``W(float32) x 1.2 + 1 GiB`` fits the available memory, else ``bfloat16``.
* **stream_layers** ``None``/``"auto"``: layer-streamed extraction
  (:mod:`probekit.extraction.streaming`) when even ``W(dtype) x 1.2 + 1 GiB`` does not fit the
  memory of the chosen device; ``True`` forces it, ``False`` forbids it.
* Explicit choices are respected; a device that is not there, or a dtype the device
  cannot run (bf16 on a pre-Ampere GPU, a dtype whose matmul the build lacks) raises
  :class:`PlacementError` before any weight is read.

The 1.2 x + 1 GiB margin covers the activations of a batch of short texts, the
tokenizer and the Python process; the available memory is ``psutil``'s
``available`` (CPU) or ``torch.cuda.mem_get_info`` (GPU), or ``memory_bytes``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from probekit.core.errors import DeviceError, ModelUnavailableError
from probekit.models import checkpoint

GiB = 1 << 30
DTYPES = ("float32", "bfloat16", "float16")
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "float": "float32", "half": "float16"}


class PlacementError(DeviceError):
    """An explicit device or dtype cannot be used here; the message says which and what to use (a
    :class:`~probekit.core.errors.DeviceError`, so a ``ModelInputError``: what the user gave is wrong)."""


@dataclass(frozen=True)
class Placement:
    device: str              # "cpu", "cuda", "cuda:N", or "auto" (device_map over several GPUs)
    dtype: str               # "float32" | "bfloat16" | "float16"
    stream_layers: bool
    reason: str

    def __str__(self) -> str:
        return f"{self.device}, {self.dtype}{', layer-streamed' if self.stream_layers else ''} ({self.reason})"


def normalize_dtype(dtype) -> str:
    if dtype is None:
        return "auto"
    name = str(dtype).replace("torch.", "")
    name = _ALIASES.get(name, name)
    if name != "auto" and name not in DTYPES:
        raise PlacementError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)} (or fp32/bf16/fp16, "
                             f"or auto)")
    return name


def weight_bytes(config, dtype: str) -> int:
    """Bytes of the weights ``from_pretrained`` loads for ``config`` in ``dtype`` (a parameter count from the config)."""
    return n_params(config) * _BYTES[normalize_dtype(dtype)]


def n_params(config) -> int:
    """Parameters of a decoder LM from its config (embeddings, blocks, norms; the LM head when untied)."""
    cfg = getattr(config, "text_config", None) or config
    d = int(getattr(cfg, "hidden_size", None) or cfg.n_embd)
    L = int(getattr(cfg, "num_hidden_layers", None) or cfg.n_layer)
    v = int(cfg.vocab_size)
    f = int(getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * d)
    nh = int(getattr(cfg, "num_attention_heads", None) or cfg.n_head)
    kv = int(getattr(cfg, "num_key_value_heads", None) or nh)
    hd = int(getattr(cfg, "head_dim", None) or d // nh)
    gated = getattr(cfg, "model_type", "") != "gpt2"
    block = d * hd * (2 * nh + 2 * kv) + (3 if gated else 2) * d * f + 4 * d
    tied = getattr(cfg, "tie_word_embeddings", True)
    pos = int(getattr(cfg, "n_positions", 0)) * d if getattr(cfg, "model_type", "") == "gpt2" else 0
    return v * d * (1 if tied else 2) + L * block + d + pos


def fits(nbytes: int, memory: int) -> bool:
    """The stated margin: weights x 1.2 + 1 GiB must fit."""
    return nbytes * 1.2 + GiB <= memory


def cuda_count() -> int:
    """How many CUDA devices torch sees (0 without CUDA or when the query fails): the one device test."""
    import torch
    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


def available_memory(device: str) -> int:
    """Free bytes on ``device`` (``cpu``: psutil available; ``cuda[:N]``: free GPU memory)."""
    if device.startswith("cuda"):
        import torch
        idx = int(device.split(":")[1]) if ":" in device else 0
        return int(torch.cuda.mem_get_info(idx)[0])
    import psutil
    return int(psutil.virtual_memory().available)


def check_device(device, dtype=None) -> None:
    """Refuse, before any weight is read, a device this torch cannot use or (``dtype`` given) a dtype it
    cannot compute in there: the one device check of :func:`plan_placement`, ``load_model`` and ``preflight``.
    ``None`` / ``"auto"`` is left to :func:`plan_placement`'s rule."""
    import torch
    if device in (None, "auto"):
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise PlacementError(f"unknown device {device!r} ({exc}); use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            raise PlacementError(f"device {device!r}: no CUDA GPU: this torch ({torch.__version__}) was built "
                                 f"without CUDA; use --device cpu (device='cpu'), or install a CUDA build of torch")
        n_gpu = cuda_count()
        if not n_gpu:
            raise PlacementError(f"device {device!r} requested but torch sees no CUDA GPU (it has CUDA "
                                 f"{torch.version.cuda}: driver or CUDA_VISIBLE_DEVICES?); use --device cpu or auto")
        if dev.index is not None and dev.index >= n_gpu:
            raise PlacementError(f"device {device!r} requested but only {n_gpu} GPU(s) are visible "
                                 f"(cuda:0..cuda:{n_gpu - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise PlacementError(f"device {device!r}: MPS is not available in this torch; use --device cpu")
    if dtype is not None:
        check_dtype_runs(dev, dtype)


def check_dtype_runs(device, dtype) -> None:
    """Run a matmul, a softmax and an rsqrt in ``dtype`` on ``device`` (names or torch objects): what a
    transformer block needs. A device that cannot (bf16 on a pre-Ampere GPU, fp8 on a CPU) raises
    :class:`PlacementError` here."""
    import torch
    dev = torch.device("cpu" if str(device) == "auto" else device)
    tdtype = dtype if isinstance(dtype, torch.dtype) else getattr(torch, normalize_dtype(dtype))
    name = str(tdtype).replace("torch.", "")
    if dev.type == "cuda" and tdtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise PlacementError(f"dtype bfloat16 cannot run on {device} ({torch.cuda.get_device_name(dev)}: no bf16 "
                             f"support, compute capability < 8.0); use --dtype float16 or float32")
    try:
        x = torch.ones(4, 4, device=dev).to(tdtype)
        torch.softmax(x @ x, dim=-1).float().sum().item()
        torch.rsqrt(x.float().pow(2).mean(-1)).to(tdtype)
    except (RuntimeError, TypeError, NotImplementedError) as exc:
        raise PlacementError(f"dtype {name} cannot run on {dev} with this torch build ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:120]}); use --dtype float32") from None


def plan_placement(config, device: str | None = "auto", dtype="auto", stream_layers=None,
                   memory_bytes: int | None = None) -> Placement:
    """Choose device, dtype and streaming for a model of ``config`` (see the module docstring for the rule)."""
    device = "auto" if device in (None, "auto") else str(device)
    dtype = normalize_dtype(dtype)
    if stream_layers == "auto":
        stream_layers = None
    n_gpu = cuda_count()
    why = []
    if device == "auto":
        if n_gpu:
            device = "cuda"
            why.append(f"{n_gpu} GPU(s) visible")
        else:
            device = "cpu"
            why.append("no GPU visible")
    else:
        check_device(device)
    mem = int(memory_bytes) if memory_bytes is not None else available_memory(device)
    gib = lambda b: f"{b / GiB:.1f} GiB"   # noqa: E731
    if dtype == "auto":
        if device.startswith("cuda"):
            import torch
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
            why.append(f"{dtype} on the GPU")
        elif fits(weight_bytes(config, "float32"), mem):
            dtype = "float32"
            why.append(f"float32 weights {gib(weight_bytes(config, 'float32'))} fit {gib(mem)} available")
        else:
            dtype = "bfloat16"
            why.append(f"float32 weights {gib(weight_bytes(config, 'float32'))} do not fit {gib(mem)} "
                       f"available (x1.2 + 1 GiB), bfloat16 {gib(weight_bytes(config, 'bfloat16'))}")
    else:
        why.append(f"dtype {dtype} as asked")
    check_dtype_runs(device, dtype)
    need = weight_bytes(config, dtype)
    ok = fits(need, mem)
    if stream_layers is None:
        if ok:
            stream = False
        elif device == "cuda" and n_gpu > 1 and fits(need, sum(available_memory(f"cuda:{i}") for i in range(n_gpu))):
            why.append(f"{gib(need)} of weights spread over {n_gpu} GPUs (device_map=auto, no CPU offload)")
            return Placement("auto", dtype, False, "; ".join(why))
        else:
            stream = True
            why.append(f"{gib(need)} of weights do not fit {gib(mem)} on {device}: layer-streamed")
    else:
        stream = bool(stream_layers)
        why.append("layer streaming forced" if stream else
                   ("in memory as asked" + ("" if ok else f" although {gib(need)} of weights may not fit {gib(mem)}")))
    return Placement(device, dtype, stream, "; ".join(why))


def plan_for_checkpoint(path, gguf_file=None, dtype="auto", device="auto", stream_layers="auto",
                        memory_bytes: int | None = None) -> Placement:
    """:func:`plan_placement` for a checkpoint directory (or GGUF file), reading only its config."""
    from pathlib import Path

    from transformers import AutoConfig
    kw = {"gguf_file": gguf_file} if gguf_file else {}
    if not gguf_file:
        check_checkpoint_dir(Path(path))
    config = AutoConfig.from_pretrained(str(path), **kw)
    return plan_placement(config, device=device, dtype=dtype, stream_layers=stream_layers, memory_bytes=memory_bytes)


def check_checkpoint_dir(path) -> None:
    """A transformers checkpoint directory must hold weights and a tokenizer; say which is missing."""
    path = Path(path)
    if not path.is_dir():
        return
    names = [p.name for p in path.iterdir()]
    if not any(n.endswith(checkpoint.WEIGHT_SUFFIXES) for n in names):
        raise ModelUnavailableError(f"checkpoint {path} has no weights (no *.safetensors or *.bin file next to "
                                    f"config.json); copy or download the weight shards")
    if not checkpoint.has_tokenizer(names):
        raise ModelUnavailableError(f"checkpoint {path} has {checkpoint.NO_TOKENIZER}")
