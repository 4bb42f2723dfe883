"""Regenerate the reference table in docs/configuration.md from the config models."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tickscope.agent.configdoc import BEGIN, END, reference

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

text = DOC.read_text()
head, rest = text.split(BEGIN, 1)
_, tail = rest.split(END, 1)
DOC.write_text(f"{head}{BEGIN}\n{reference()}{END}{tail}")
print(f"updated {DOC}")
