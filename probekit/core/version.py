"""probekit's version, in a module of its own: every stage reads it from here, so no module has to import
the package ``probekit`` (whose ``__init__`` imports the stages) to stamp its outputs.

This is the one place the version is written: ``pyproject.toml`` declares it ``dynamic`` and setuptools reads
this assignment (``[tool.setuptools.dynamic]``, statically: nothing is imported at build time), so the wheel's
metadata, an editable install and a plain checkout all say the same (``tests/test_wheel.py``)."""
__version__ = "0.1.0"
