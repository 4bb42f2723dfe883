"""The shim's version, as a literal (as the sidecar's tickscope.agent.version).

It must equal shim/pyproject.toml's [project] version: tests/test_packaging.py
builds the wheel and checks the two.
"""

from __future__ import annotations

__version__ = "0.1.0"
