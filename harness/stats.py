"""Summaries the benchmarks report: medians with bootstrap intervals, paired overheads, the JSON report file.

The load generators these figures come from live in `harness.load`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def median_ci90(values: Sequence[float]) -> list[float]:
    """A 90% percentile-bootstrap interval of the median of per-round values (2,000 resamples, seeded). It
    assumes rounds are independent, which shuffled back-to-back rounds only roughly are: an indication."""
    values = np.asarray(values, float)
    resampled = np.random.default_rng(0).choice(values, size=(2000, len(values)), replace=True)
    return [round(float(q), 2) for q in np.percentile(np.median(resampled, axis=1), [5, 95])]


def paired_overhead_pct(off: Sequence[float], traced: Sequence[float]) -> dict:
    """Throughput lost to tracing, from rounds run back to back: 1 - median(traced_i / off_i), in percent,
    with the interquartile range of the per-round values and a 90% bootstrap interval of that median.
    Pairing cancels the slow drift of a shared machine that comparing two medians does not."""
    lost = 100 * (1 - np.asarray(traced, float) / np.asarray(off, float))
    return {"median": round(float(np.median(lost)), 2),
            "interquartile": [round(float(q), 2) for q in np.percentile(lost, [25, 75])],
            "median_ci90": median_ci90(lost)}


def save_json_report(path: Path, report: dict, hidden: Sequence[str] = ()) -> None:
    """Write `report` as JSON to `path` and print it, less the bulky `hidden` keys (per-round values)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in hidden}, indent=2))
