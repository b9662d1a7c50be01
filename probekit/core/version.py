"""probekit's version, in a module of its own: every stage reads it from here, so no module has to import
the package ``probekit`` (whose ``__init__`` imports the stages) to stamp its outputs."""
__version__ = "0.1.0"
