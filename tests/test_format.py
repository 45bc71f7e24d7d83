"""ntkbench.format: units chosen after rounding, fixed point, percent accuracies, integers; and the
CLI's run summary, which speaks in those units."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ntkbench import format as fmt
from ntkbench import runner
from ntkbench.record import Config, Environment, Evaluation, RunRecord


@pytest.mark.parametrize("s, text", [
    (0.0, "0 ms"), (0.0004567, "0.457 ms"), (0.0123, "12.3 ms"), (0.5, "500 ms"),
    (0.999, "999 ms"), (0.9994, "999 ms"), (0.9996, "1.00 s"), (1.0, "1.00 s"), (1.2345, "1.23 s"),
    (9.996, "10.0 s"), (12.34, "12.3 s"), (59.94, "59.9 s"), (59.97, "1.00 min"), (60.0, "1.00 min"),
    (150.0, "2.50 min"), (1000.0, "16.7 min"), (3590.0, "59.8 min"),
    (3599.0, "1.00 h"), (3600.0, "1.00 h"), (4320.0, "1.20 h"), (360_000.0, "100 h"), (3_600_000.0, "1000 h"),
])
def test_seconds(s, text):
    assert fmt.seconds(s) == text


def test_seconds_never_prints_an_exponent():
    for s in np.geomspace(1e-6, 1e7, 2000):
        text = fmt.seconds(float(s))
        assert "e" not in text.split()[0] and text.split()[1] in ("ms", "s", "min", "h"), text
        number, unit = float(text.split()[0]), text.split()[1]
        assert number < {"ms": 1000, "s": 60, "min": 60, "h": math.inf}[unit], text


def test_seconds_trimmed_for_ticks():
    assert [fmt.seconds(s, trim=True) for s in (0.001, 0.02, 0.5, 1.0, 2.5, 30.0, 60.0, 120.0, 3600.0)] == [
        "1 ms", "20 ms", "500 ms", "1 s", "2.5 s", "30 s", "1 min", "2 min", "1 h"]


@pytest.mark.parametrize("mb, text", [
    (0.0, "0 MB"), (0.05, "0.0500 MB"), (12.345, "12.3 MB"), (153.2, "153 MB"), (1000.0, "1000 MB"),
    (1023.4, "1023 MB"), (1023.7, "1.00 GB"), (1024.0, "1.00 GB"), (1353.0, "1.32 GB"), (13530.0, "13.2 GB"),
    (1024.0**2, "1.00 TB"),
])
def test_megabytes(mb, text):
    assert fmt.megabytes(mb) == text


@pytest.mark.parametrize("value", [math.nan, None, float("nan")])
def test_missing(value):
    for f in (fmt.seconds, fmt.megabytes, fmt.percent, fmt.accuracy, fmt.integer, fmt.significant):
        assert f(value) == fmt.MISSING


def test_infinities():
    assert fmt.seconds(math.inf) == "∞" and fmt.megabytes(-math.inf) == "−∞"


def test_significant():
    assert fmt.significant(0.0123) == "0.0123"
    assert fmt.significant(1.5) == "1.50" and fmt.significant(1.5, trim=True) == "1.5"
    assert fmt.significant(1234.6) == "1235"
    assert fmt.significant(0.09996) == "0.100" and fmt.significant(-0.09996) == "-0.100"
    assert fmt.significant(99.96) == "100" and fmt.significant(2.0, trim=True) == "2"


@pytest.mark.parametrize("mean, std, n, text", [
    (0.96667, 0.0081, 3, "96.7 ± 0.8"),
    (0.86, 0.0, 3, "86.0 ± 0.0"),  # the seeds agree: said, not hidden
    (0.86, 0.0004, 3, "86.0 ± <0.1"),  # they differ, by less than the last digit
    (0.9, 0.0, 1, "90.0"),  # one seed: no spread
    (0.9, math.nan, 1, "90.0"),
    (0.9, math.nan, 2, "90.0"),
    (1.0, 0.0, 2, "100.0 ± 0.0"),
    (0.0, 0.0, 1, "0.0"),
])
def test_accuracy(mean, std, n, text):
    assert fmt.accuracy(mean, std, n) == text


def test_percent_and_seeds():
    assert fmt.percent(0.96667) == "96.7" and fmt.percent(0.5, decimals=0) == "50" and fmt.percent(-1e-9) == "0.0"
    assert fmt.seeds(1) == "1 seed" and fmt.seeds(3) == "3 seeds"


def test_integers_stay_integers():
    assert fmt.integer(100) == "100" and fmt.integer(100.0) == "100" and fmt.integer(np.float64(90.0)) == "90"
    assert fmt.integer(12345) == "12,345" and fmt.integer(np.int64(1_000_000)) == "1,000,000"
    assert fmt.integer(2.5) == "2.50"


def _record(method: str, seed: int, acc: float, total: float, peak: float, finished: bool = True) -> RunRecord:
    config = Config("iris", method, "mlp", {"n_train": 100}, {}, {"depth": 1})
    evaluation = Evaluation(test_accuracy=acc, test_mse=1 - acc, train_accuracy=1.0, time_fit_s=0.8 * total,
                            time_predict_s=0.2 * total, time_total_s=total, time_train_eval_s=0.1,
                            peak_memory_mb=peak, process_peak_memory_mb=peak + 900, n_params=1000)
    environment = Environment("cpu", "cpu", "2.14.1", "0.1.0", "host", "0" * 40)
    return RunRecord(config, seed, 100, "FINISHED" if finished else "FAILED", environment,
                     evaluation if finished else None)


def test_the_cli_summary_speaks_in_human_units():
    records = [_record("nn", s, 0.9 + s / 100, 1000.0, 13530.0) for s in (0, 1)]
    records += [_record("ntk", 0, 0.95, 1.2495, 0.05), _record("entk", 0, 0.0, 1.0, 1.0, finished=False)]
    header, *lines = runner.summary_text(records).splitlines()
    assert header.split("  ")[0] == "method" and "test accuracy, %" in header and "peak memory" in header
    by_method = {line.split()[0]: line for line in lines}
    ntk, nn, entk = by_method["ntk"], by_method["nn"], by_method["entk"]
    assert ntk.split()[1:] == ["100", "95.0", "1", "1.00", "s", "250", "ms", "0.0500", "MB", "0"]  # one seed: no ±
    assert "90.5 ± 0.7" in nn and "13.3 min" in nn and "13.2 GB" in nn and "e+" not in nn
    assert entk.split() == ["entk", "—", "—", "—", "—", "—", "—", "1"]
    assert "NaN" not in runner.summary_text(records) and "100.0" not in runner.summary_text(records)
    table = runner.summary(records)
    assert table.loc[("ntk", 100), "acc_std"] == 0.0 and str(table.index.dtypes["n_train"]) == "Int64"
    only_failed = runner.summary_text(records[-1:]).splitlines()[1].split()
    assert only_failed[:2] == ["entk", "—"] and runner.summary_text([]) == "no runs"
