"""The leaderboard's rows: identity (config, device class, source), seed counting, labels, ranks
and the Pareto front."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from board_records import make_record, local

from ntkbench.leaderboard.ranking import SELF_REPORTED, VERIFIED, Result, aggregate, combine, pareto_front

SCRIPT = "<script>alert(1)</script>"
# (task, method, n_train, per-seed accuracies, time_total_s)
SPECS = [
    ("digits", "nn", 500, (0.95, 0.96, 0.97), 10.0),
    ("digits", "nn", 1000, (0.97, 0.98, 0.99), 20.0),
    ("digits", "ntk", 500, (0.93, 0.94, 0.95), 2.0),
    ("digits", "nngp", 500, (0.85, 0.86, 0.87), 1.5),  # ties entk, slower
    ("digits", "entk", 500, (0.86, 0.86, 0.86), 1.0),
    ("digits", "taylor", 500, (0.90, 0.91, 0.92), 30.0),  # dominated
    ("wine", SCRIPT, 100, (0.90, 0.91, 0.92), 3.0),
    ("wine", "ntk", 100, (0.95, 0.95, 0.95), 5.0),
]
EXPECTED_RANKS = {
    ("digits", "nn", 1000): 1, ("digits", "nn", 500): 2, ("digits", "ntk", 500): 3,
    ("digits", "taylor", 500): 4, ("digits", "entk", 500): 5, ("digits", "nngp", 500): 6,
    ("wine", "ntk", 100): 1, ("wine", SCRIPT, 100): 2,
}
EXPECTED_FRONT = {("digits", "nn", 1000), ("digits", "nn", 500), ("digits", "ntk", 500), ("digits", "entk", 500),
                  ("wine", "ntk", 100), ("wine", SCRIPT, 100)}


def spec_results() -> list[Result]:
    return local(*(make_record(task, method, seed=seed, acc=acc, total=total, n_train=n, peak=100.0 + seed)
                   for task, method, n, accs, total in SPECS for seed, acc in enumerate(accs)))


def by_key(rows):
    return {(r.task, r.method, r.n_train): r for r in rows}


def test_means_std_and_counts():
    rows = by_key(aggregate(spec_results()))
    assert len(rows) == len(SPECS)
    r = rows[("digits", "nn", 500)]
    assert r.seeds == 3 and r.accuracies == (0.95, 0.96, 0.97) and r.seed_ids == (0, 1, 2)
    assert r.runs_per_seed == (1, 1, 1)
    assert r.acc_mean == pytest.approx(0.96) and r.acc_std == pytest.approx(0.01)
    assert r.time_total_s == pytest.approx(10.0) and r.time_fit_s == pytest.approx(8.0)
    assert r.time_predict_s == pytest.approx(2.0)
    assert r.peak_memory_mb == 102.0 and r.n_params == 1000 and r.source == "local"
    assert rows[("digits", "entk", 500)].acc_std == 0.0


def test_configs_never_merge_and_labels_name_what_differs():
    """The issue's case: a width-64 depth-1 run must not join the width-256 depth-2 row."""
    wide = [make_record("wine", "ntk", seed=s, acc=0.95) for s in (0, 1, 2)]
    narrow = make_record("wine", "ntk", seed=0, acc=0.5, arch_options={"depth": 1, "width": 64})
    lr = make_record("wine", "ntk", seed=0, acc=0.7, method_options={"lr": 0.01})
    other = make_record("wine", "nngp", seed=0, acc=0.8)
    rows = aggregate(local(*wide, narrow, lr, other))
    labels = {(r.method, r.label): r for r in rows}
    assert set(labels) == {("ntk", "mlp depth=2 width=256 ntk.lr=0.1"), ("ntk", "mlp depth=1 width=64 ntk.lr=0.1"),
                           ("ntk", "mlp depth=2 width=256 ntk.lr=0.01"), ("nngp", "mlp")}
    committed = labels[("ntk", "mlp depth=2 width=256 ntk.lr=0.1")]
    assert committed.seeds == 3 and committed.acc_mean == pytest.approx(0.95)
    assert committed.fingerprint == wide[0].fingerprint != narrow.fingerprint
    assert labels[("ntk", "mlp depth=1 width=64 ntk.lr=0.1")].seed_ids == (0,)


def test_task_options_label_but_n_train_is_its_own_column():
    rows = aggregate(local(make_record(n_train=100), make_record(n_train=200),
                           make_record(n_train=100, task_options={"label_noise": 0.5})))
    assert sorted((r.label, r.n_train) for r in rows) == [
        ("mlp task.label_noise=0.0", 100), ("mlp task.label_noise=0.0", 200), ("mlp task.label_noise=0.5", 100)]


def test_device_classes_and_sources_are_never_averaged():
    intel = "Intel(R) Xeon(R) Processor"
    records = [make_record(seed=s, total=1.0) for s in (0, 1)] + [make_record(seed=s, total=9.0, device_name=intel)
                                                                   for s in (0, 1)]
    entry = [Result(make_record(seed=s, total=5.0, run_id=f"e{s}"), SELF_REPORTED) for s in (0, 1)]
    checked = [Result(make_record(seed=s, total=7.0, run_id=f"v{s}"), VERIFIED, "Ann on 2026-12-01") for s in (0, 1)]
    rows = aggregate(local(*records) + entry + checked)
    assert len(rows) == 4 and len({r.fingerprint for r in rows}) == 1 and len({r.label for r in rows}) == 1
    times = {(r.device, r.source): r.time_total_s for r in rows}
    assert times == {(records[0].environment.device_name, "local"): 1.0, (intel, "local"): 9.0,
                     (records[0].environment.device_name, "self-reported"): 5.0,
                     (records[0].environment.device_name, "verified"): 7.0}
    assert all(r.seeds == 2 for r in rows)
    assert next(r for r in rows if r.source == VERIFIED).verified_by == "Ann on 2026-12-01"


def test_each_seed_counts_once_the_latest_run_kept():
    first = make_record(seed=0, acc=0.5, finished_at="2026-12-01T00:00:00.000+00:00")
    rerun = make_record(seed=0, acc=0.9, finished_at="2026-12-02T00:00:00.000+00:00")
    same_time = [make_record(seed=1, acc=a, run_id=i) for a, i in ((0.7, "b" * 32), (0.6, "a" * 32))]
    inputs = local(first, rerun, *same_time)
    (row,) = aggregate(inputs)
    assert row.seeds == 2 and row.seed_ids == (0, 1) and row.runs_per_seed == (2, 2)
    assert row.accuracies == (0.9, 0.7)  # the later run of seed 0; the larger run id of seed 1
    shuffled = list(inputs)
    random.Random(0).shuffle(shuffled)
    assert aggregate(shuffled) == [row]


def test_an_exported_run_counts_once_through_its_entry():
    """8 local runs, 2 of them exported: 2 seeds in the entry row, 6 in the local row, never 10."""
    runs = [make_record(seed=s, acc=0.9) for s in range(8)]
    entry = [Result(r, SELF_REPORTED) for r in runs[:2]]
    rows = aggregate(combine(runs, entry))
    assert sorted((r.source, r.seeds) for r in rows) == [("local", 6), ("self-reported", 2)]
    assert sum(r.seeds for r in rows) == 8
    unfinished = replace(runs[7], run_id="x" * 32, status="FAILED", evaluation=None)
    assert [r.record for r in combine([unfinished], [])] == []


def test_commits_mixed():
    rows = aggregate(local(make_record(seed=0), make_record(seed=1, commit="f" * 40)))
    assert rows[0].commit == "mixed" and len(rows[0].commits) == 2
    assert aggregate(local(make_record()))[0].commit == make_record().environment.git_commit


def test_ranks_and_a_tie_goes_to_the_lower_time():
    results = spec_results()
    rows = aggregate(results)
    got = by_key(rows)
    assert {k: r.rank for k, r in got.items()} == EXPECTED_RANKS
    # entk and nngp both average 0.86 (up to float rounding); entk is faster, so ranks first.
    assert got[("digits", "entk", 500)].rank < got[("digits", "nngp", 500)].rank
    shuffled = list(results)
    random.Random(0).shuffle(shuffled)
    assert aggregate(shuffled) == rows
    assert [(r.task, r.rank) for r in rows] == sorted((r.task, r.rank) for r in rows)


def test_a_full_tie_is_ordered_by_method():
    rows = aggregate(local(*(make_record(method=m) for m in ("zeta", "alpha", "mid"))))
    assert [r.method for r in rows] == ["alpha", "mid", "zeta"] and [r.rank for r in rows] == [1, 2, 3]


def test_pareto_front():
    rows = aggregate(spec_results())
    assert {k for k, r in by_key(rows).items() if r.pareto} == EXPECTED_FRONT
    assert {(r.task, r.method, r.n_train) for r in pareto_front(rows)} == EXPECTED_FRONT


def test_nan_accuracy_ranks_last_and_is_off_the_front():
    bad = local(*(make_record("digits", "broken", seed=s, acc=float("nan"), total=0.0) for s in range(3)))
    rows = [r for r in aggregate(spec_results() + bad) if r.task == "digits"]
    assert rows[-1].method == "broken" and not rows[-1].pareto
    assert sum(r.pareto for r in rows) == 4


def test_one_seed_and_no_results():
    (row,) = aggregate(local(make_record()))
    assert row.seeds == 1 and row.acc_std == 0.0 and row.rank == 1 and row.pareto
    assert aggregate([]) == []
