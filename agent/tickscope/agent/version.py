"""The installed distribution's version, read once."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("tickscope")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
