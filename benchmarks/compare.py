"""Compare a pytest-benchmark JSON run against a committed baseline: ``make perf``.

    python benchmarks/compare.py BASELINE.json CURRENT.json [--slower 1.5]

One row per benchmark found in both files: the fastest round of each, their ratio
current/baseline, and every ``ratio_*`` figure of ``extra_info`` (ratios measured within one run,
which machine load affects far less than raw times). A benchmark more than ``--slower`` times
slower than its baseline fails the comparison (exit 1); the default 1.5 leaves room for the noise
of shared machines. Benchmarks in only one file are listed, not failed. Bad input is one line and
exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load(path: Path) -> dict[str, dict]:
    """{fullname: benchmark} from a ``--benchmark-json`` file."""
    try:
        data = json.loads(path.read_text())
        return {b["fullname"]: b for b in data["benchmarks"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"compare: {path} is not a pytest-benchmark JSON file ({type(e).__name__}: {e})") from None


def compare(baseline: dict[str, dict], current: dict[str, dict], slower: float) -> tuple[list[str], bool]:
    lines = ["| benchmark | baseline min, s | current min, s | current/baseline | in-run ratios (baseline → current) |",
             "|---|---|---|---|---|"]
    failed = False
    for name in sorted(set(baseline) | set(current)):
        if name not in baseline or name not in current:
            lines.append(f"| {name} | {'–' if name not in baseline else _min(baseline[name])} | "
                         f"{'–' if name not in current else _min(current[name])} | only in one run | |")
            continue
        b, c = baseline[name]["stats"]["min"], current[name]["stats"]["min"]
        ratio = c / b
        bad = ratio > slower
        failed |= bad
        ratios = ", ".join(f"{k} {baseline[name]['extra_info'].get(k, float('nan')):.3g} → {v:.3g}"
                           for k, v in sorted(current[name].get("extra_info", {}).items())
                           if k.startswith("ratio_") and isinstance(v, (int, float)))
        lines.append(f"| {name} | {b:.4g} | {c:.4g} | {ratio:.2f}{' SLOWER' if bad else ''} | {ratios} |")
    return lines, failed


def _min(bench: dict) -> str:
    return f"{bench['stats']['min']:.4g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("baseline", type=Path)
    p.add_argument("current", type=Path)
    p.add_argument("--slower", type=float, default=1.5, help="fail when current/baseline exceeds this (default 1.5)")
    a = p.parse_args(argv)
    try:
        lines, failed = compare(load(a.baseline), load(a.current), a.slower)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    print("\n".join(lines))
    if failed:
        print(f"compare: some benchmarks are more than {a.slower}× slower than {a.baseline}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
