"""``python -m probekit``: the command line (see :mod:`probekit.cli`)."""
from .cli import main

raise SystemExit(main())
