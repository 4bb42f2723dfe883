"""docs/ stays in step with the code."""

from __future__ import annotations

from pathlib import Path

from tickscope.agent.configdoc import BEGIN, END, reference

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_configuration_reference_is_current() -> None:
    text = (DOCS / "configuration.md").read_text()
    assert BEGIN in text and END in text
    embedded = text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")
    assert embedded == reference().strip("\n"), "docs/configuration.md is stale: run `make docs`"


def test_metrics_reference_lists_every_contract_metric() -> None:
    from helpers.contract import (
        ENGINE_COUNTERS,
        ENGINE_GAUGES,
        HOST_COUNTERS,
        HOST_GAUGES,
        SELF_COUNTERS,
        SELF_GAUGES,
    )

    text = (DOCS / "metrics.md").read_text()
    # Families documented on one row, written with braces or a shared prefix.
    grouped = {
        **{
            f"node_network_{d}_{w}_total": "`node_network_{receive,transmit}_{bytes,packets,errs,drop}_total`"
            for d in ("receive", "transmit")
            for w in ("bytes", "errs", "drop")
        },
        "node_memory_Buffers_bytes": "`_Buffers_bytes`",
        "node_memory_Cached_bytes": "`_Cached_bytes`",
    }
    names = HOST_GAUGES + ENGINE_GAUGES + SELF_GAUGES
    names += [f"{n}_total" for n in HOST_COUNTERS + ENGINE_COUNTERS + SELF_COUNTERS]
    missing = [n for n in names if grouped.get(n, f"`{n}`") not in text]
    assert missing == [], f"docs/metrics.md does not list {missing}"


def test_metrics_reference_lists_the_span_path() -> None:
    from helpers.contract import (
        SPAN_COUNTERS,
        SPAN_HISTOGRAMS,
        SPAN_PATH_SELF,
        TRADING_COUNTERS,
        TRADING_GAUGES,
        TRADING_HISTOGRAMS,
    )

    text = (DOCS / "metrics.md").read_text()
    names = [f"{n}_total" for n in SPAN_COUNTERS + TRADING_COUNTERS]
    names += SPAN_HISTOGRAMS + TRADING_HISTOGRAMS + TRADING_GAUGES
    names += [n for n in SPAN_PATH_SELF if not n.startswith("tickscope_pipeline_queue")]
    missing = [n for n in names if f"`{n}`" not in text]
    assert missing == [], f"docs/metrics.md does not list {missing}"
