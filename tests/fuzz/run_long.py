"""`make fuzz`: the long run. Random seeds, a time budget, and what it finds written
to the corpus (tests/fuzz/corpus/<target>/crash-<hash>), shrunk first.

    python tests/fuzz/run_long.py [--minutes 10] [--seed N] [--no-atheris] [--no-save]

Half the budget goes to hypothesis cases through an in-process sidecar (one sidecar,
state kept between cases, promtool every 25th), half to atheris on each target in
turn. Each distinct failure signature is reported once with its smallest input; a
signature's input is shrunk (tests/fuzz/shrink.py) before it is saved. atheris is
re-run with the signatures it already found marked known, so one bug does not hide
the next. Exit status 1 when anything was found.
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, given, seed, settings

from fuzz.harness import Harness
from fuzz.shrink import shrink
from fuzz.strategies import Case, cases

FUZZ = Path(__file__).resolve().parent
CORPUS = FUZZ / "corpus"
TARGETS = ("traces_pb", "traces_json", "metrics_pb", "metrics_json")


def save(target: str, body: bytes, note: str) -> Path:
    path = CORPUS / target / f"crash-{hashlib.sha1(body).hexdigest()[:12]}"
    path.write_bytes(body)
    print(f"  saved {path.relative_to(FUZZ.parent.parent)} ({len(body)} bytes): {note}")
    return path


def run_hypothesis(deadline: float, rng: random.Random, store: bool) -> int:
    found = 0
    with Harness() as harness:
        while time.monotonic() < deadline:
            signal = rng.choice(["traces", "metrics"])

            @settings(
                database=None,
                max_examples=200,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            @seed(rng.randrange(2**32))
            @given(cases(signal))  # type: ignore[arg-type]
            def one(case: Case) -> None:
                if time.monotonic() < deadline:
                    harness.run(case)

            one()
        harness.finish()
        print(harness.report())
        for f in harness.found.values():
            found += 1
            small = shrink(f.case, lambda c, sig=f.signature: harness.reproduces(c, sig), tries=400)
            print(
                f"- {f.signature}\n  shrunk to {small.transport} {small.signal} {small.encoding}"
                f"{' gzip' if small.gzip else ''}: {small.body[:400]!r}"
            )
            if store:
                save(small.target, small.body, f.signature)
    return found


_SIGNATURE = re.compile(r"^FUZZ-SIGNATURE: (.*)$", re.MULTILINE)


def run_atheris(deadline: float, rng: random.Random, store: bool) -> int:
    known: list[str] = []
    found = 0
    targets = list(TARGETS)
    while time.monotonic() < deadline:
        target = targets[0]
        targets.append(targets.pop(0))
        with tempfile.TemporaryDirectory() as tmp:
            new = Path(tmp) / "new"
            new.mkdir()
            seconds = max(10, int(min(120, deadline - time.monotonic())))
            result = subprocess.run(
                [
                    sys.executable,
                    str(FUZZ / "atheris_targets.py"),
                    target,
                    f"-seed={rng.randrange(1, 2**31)}",
                    f"-max_total_time={seconds}",
                    "-max_len=8192",
                    f"-artifact_prefix={tmp}/",
                    str(new),
                    str(CORPUS / target),
                ],
                capture_output=True,
                text=True,
                env={**os.environ, "TICKSCOPE_FUZZ_KNOWN": "\n".join(known)},
                timeout=seconds + 120,
            )
            signatures = _SIGNATURE.findall(result.stderr)
            crashes = sorted(Path(tmp).glob("crash-*"))
            if result.returncode != 0 or crashes:
                signature = signatures[-1] if signatures else f"{target}: exit {result.returncode}"
                found += 1
                known.append(signature)
                print(f"- atheris {signature}")
                tail = result.stderr[result.stderr.rfind("Traceback") :][:2000]
                print("  " + tail.replace("\n", "\n  "))
                if store and crashes:
                    save(target, crashes[0].read_bytes(), signature)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=None, help="default: random")
    parser.add_argument("--no-atheris", action="store_true")
    parser.add_argument("--no-save", action="store_true", help="do not write to the corpus")
    args = parser.parse_args()
    run_seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"run_long: seed {run_seed}, {args.minutes} minutes")
    rng = random.Random(run_seed)
    budget = args.minutes * 60
    # A hung sidecar must not hang `make fuzz`: dump every thread and exit.
    faulthandler.dump_traceback_later(budget + 900, exit=True)
    start = time.monotonic()
    share = 1.0 if args.no_atheris else 0.5
    found = run_hypothesis(start + budget * share, rng, not args.no_save)
    if not args.no_atheris:
        found += run_atheris(start + budget, rng, not args.no_save)
    print(f"run_long: {found} signatures in {time.monotonic() - start:.0f} s (seed {run_seed})")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
