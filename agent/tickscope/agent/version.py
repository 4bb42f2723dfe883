"""The sidecar's version, as a literal.

Not importlib.metadata.version(): that call reads and parses the installed METADATA
(email's parser) in every sidecar process for one string, and fails over to a
made-up version when the tree runs uninstalled. It must equal pyproject.toml's
[project] version: tests/test_packaging.py builds the wheel and checks the two.
"""

from __future__ import annotations

__version__ = "0.1.0"
