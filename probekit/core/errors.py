"""The model-loading errors, in a module of their own so that ``models`` and ``adapters`` both
import them without importing each other.

* :class:`ModelUnavailableError` -- the weights cannot be obtained *here* (not installed, not
  downloaded, gated). The claim benchmarks turn it into a skip that says how to supply them.
* :class:`UnsupportedArchitectureError` -- the model loads, but its architecture has no adapter.
* :class:`ModelInputError` -- what the user supplied is wrong: a checkpoint that is broken or is
  not the model it is given as, a bad device or dtype, a malformed ``NAME+random:SEED``. The
  message names the file, the value and what to do. Never a skip: the user must fix it.

The command line maps all three to exit code 2.
"""
from __future__ import annotations


class ModelUnavailableError(RuntimeError):
    """The weights of a model cannot be obtained here; the message says how to supply them."""


class UnsupportedArchitectureError(ValueError):
    """The model's architecture has no entry in the adapter table."""


class ModelInputError(ValueError):
    """A model argument or checkpoint is wrong; the message names what and what to do."""


class CheckpointError(ModelInputError):
    """A checkpoint directory or file is incomplete or malformed (missing weights, tokenizer or
    shards, an unparsable config.json, a file named .gguf that is not GGUF)."""


class ModelIdentityError(ModelInputError):
    """A checkpoint supplied for a registry model does not have that model's shape."""


class DeviceError(ModelInputError):
    """The requested device or dtype cannot run here (e.g. CUDA on a CPU-only torch)."""


class RunInProgressError(RuntimeError):
    """Another probekit process is writing the same results folder (``probekit run --out``)."""
