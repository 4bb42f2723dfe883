"""The table of alerts in docs/alerts.md, generated from alert-rules/*.rules.yml.

`python scripts/alerts_table.py` rewrites the table in place; the tests check it
is current, so thresholds and durations cannot drift from the rules.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "alerts.md"
BEGIN = "<!-- BEGIN GENERATED: scripts/alerts_table.py -->"
END = "<!-- END GENERATED -->"


def rules(directory: Path = ROOT / "alert-rules") -> list[dict]:
    """Every alerting rule in directory's *.rules.yml, with the file it is in."""
    found = []
    for path in sorted(directory.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    found.append({**rule, "file": path.name})
    return found


def table() -> str:
    lines = [
        "| alert | component | severity | for | fires when |",
        "|---|---|---|---|---|",
    ]
    for rule in rules():
        # PromQL comments (`# ...` to the end of a line) would swallow the rest of
        # the expression once it is folded onto one line.
        expr = re.sub(r"#[^\n]*", "", rule["expr"])
        expr = re.sub(r"\s+", " ", expr).strip().replace("|", "\\|")
        lines.append(
            f"| [{rule['alert']}](runbooks.md#{rule['alert'].lower()}) | {rule['labels']['component']} "
            f"| {rule['labels']['severity']} | {rule.get('for', '0s')} | `{expr}` |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{table()}{END}{tail}")
    print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
