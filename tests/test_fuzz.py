"""Fuzzing in `make test`: about a minute, deterministic, the corpus committed.

- hypothesis (derandomized, a fixed number of examples) sends OTLP traces and metrics
  through the real receivers of one in-process sidecar (tests/fuzz/harness.py), and
  after every case checks the invariant: an allowed status, /healthz 200, and both
  /metrics formats parsing (promtool every 25th case and at the end);
- every file in tests/fuzz/corpus/ is replayed the same way, over HTTP plain and
  gzipped and, for protobuf, over gRPC;
- atheris replays the corpus into the decoders and consumers, then runs a fixed
  number of mutations from a fixed seed (in a subprocess: it takes over the process).

`make fuzz` (tests/fuzz/run_long.py) runs the same for longer with random seeds and
writes what it finds to the corpus.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from fuzz.harness import Harness
from fuzz.strategies import Case, cases

FUZZ = Path(__file__).parent / "fuzz"
CORPUS = FUZZ / "corpus"
TARGETS = ("traces_pb", "traces_json", "metrics_pb", "metrics_json")
# ~35 ms a case (send, drain, /healthz, two scrapes and their parses), measured:
# 200 a signal is ~7 s each.
EXAMPLES = 200
# libFuzzer runs a target at ~500 inputs/s here (fresh components per input).
ATHERIS_RUNS = 2000
ATHERIS_SEED = 1

pytestmark = pytest.mark.system  # promtool

FUZZ_SETTINGS = settings(
    derandomize=True,
    database=None,
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    with Harness() as h:
        yield h


def _assert_clean(harness: Harness, before: set[str]) -> None:
    harness.finish()
    new = {s for s in harness.found if s not in before}
    assert not new, "invariant broken:\n" + harness.report()


@pytest.mark.parametrize("signal", ["traces", "metrics"])
def test_fuzz_requests(harness: Harness, signal: str) -> None:
    before = set(harness.found)
    start = harness.cases

    @FUZZ_SETTINGS
    @given(cases(signal))  # type: ignore[arg-type]
    def one(case: Case) -> None:
        harness.run(case)

    one()
    assert harness.cases - start >= EXAMPLES // 2  # it really ran
    _assert_clean(harness, before)


def _corpus_cases() -> list[Case]:
    out: list[Case] = []
    for path in sorted(CORPUS.glob("*/*")):
        signal, _, kind = path.parent.name.partition("_")
        body = path.read_bytes()
        encoding = "protobuf" if kind == "pb" else "json"
        out += [
            Case(signal, encoding, body),  # type: ignore[arg-type]
            Case(signal, encoding, body, gzip=True),  # type: ignore[arg-type]
        ]
        if encoding == "protobuf":
            out.append(Case(signal, encoding, body, transport="grpc"))  # type: ignore[arg-type]
    return out


def test_corpus_replay(harness: Harness) -> None:
    corpus = _corpus_cases()
    assert len(corpus) >= 40  # the committed seeds are there
    before = set(harness.found)
    for case in corpus:
        harness.run(case)
    _assert_clean(harness, before)


def _atheris(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FUZZ / "atheris_targets.py"), target, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TICKSCOPE_FUZZ_KNOWN": ""},
    )


def _signatures(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("FUZZ-SIGNATURE:")]


@pytest.mark.parametrize("target", TARGETS)
def test_atheris(target: str, tmp_path: Path) -> None:
    seeds = sorted(str(p) for p in (CORPUS / target).iterdir())
    assert seeds
    # Files (not a directory) as arguments: libFuzzer runs each once and stops.
    replay = _atheris(target, *seeds)
    assert replay.returncode == 0, "\n".join(_signatures(replay.stderr)) + replay.stderr[-3000:]
    assert f"Executed {seeds[-1]}" in replay.stderr
    # Then mutations from a fixed seed. New inputs go to the first directory (a
    # temporary one): the committed corpus is only read.
    found = tmp_path / "new"
    found.mkdir()
    run = _atheris(
        target,
        f"-seed={ATHERIS_SEED}",
        f"-runs={ATHERIS_RUNS}",
        "-max_len=4096",
        f"-artifact_prefix={tmp_path}/",
        str(found),
        str(CORPUS / target),
    )
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("crash-"))
    assert run.returncode == 0 and not crashes, (
        "\n".join(_signatures(run.stderr)) + f"\ncrash inputs: {crashes}\n" + run.stderr[-3000:]
    )
    assert f"Done {ATHERIS_RUNS} runs" in run.stderr
