"""tickscope's sidecar process: config, collectors, receivers and the admin server.

The sidecar never imports the engine-side shim or ccxt: they cost ~80 MB of RSS
and belong to the engine's process, not this one.
"""

from tickscope.agent.version import __version__

__all__ = ["__version__"]
