"""The study grid, its runs into a temporary SQLite store, and the rendered report."""

import dataclasses
import html
import math
import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ntkbench import cli, runner, study
from ntkbench.leaderboard.render import escape_markdown
from ntkbench.methods import AT_EPOCH, METHODS, linearizes, option_names
from ntkbench.record import FINGERPRINT_TAG
from ntkbench.study.sections import anchor
from report_tables import rows as _rows
from report_tables import section as _section
from ntkbench.tracking import runs_frame

ARCH = {"depth": 1, "width": 16}
GRID = study.make_grid(
    epochs=2, at_epochs=(0,), label_noise=(0.0, 0.5), n_trains=(40, 80), seeds=(0, 1), diagnostics_every=1,
    task_options=(("n_test", 30),),
    teacher_options=(("n_test", 30), ("num_classes", 3), ("input_shape", (4,)), ("width", 16)),
)


@pytest.fixture(scope="module")
def store(tmp_path_factory, frozen_gc):
    root = tmp_path_factory.mktemp("study")
    uri = f"sqlite:///{root}/mlflow.db"
    results = study.run_study("iris", arch_options=ARCH, tracking_uri=uri, grid=GRID, device="cpu")
    return uri, root, results


def test_grids_are_declared():
    labels = [v.label for v in study.STUDY_GRID.variants]
    assert labels == ["nn", "entk@0", "entk@1", "entk@5", "entk@end", "taylor@0", "taylor@1", "taylor@5",
                      "taylor@end", "nngp", "ntk"]
    assert dict(study.STUDY_GRID.variants[4].options) == {AT_EPOCH: 40}
    assert study.STUDY_GRID.label_noise == (0.0, 0.2, 0.5, 1.0) and study.STUDY_GRID.seeds == (0, 1, 2)
    quick = study.QUICK_GRID
    assert (quick.seeds, quick.label_noise, quick.n_trains) == ((0,), (0.0, 0.5), (100,))
    assert dict(quick.training) == {"epochs": 5, "diagnostics_every": 1}
    assert "taylor@end" in [v.label for v in quick.variants] and "taylor@5" not in [v.label for v in quick.variants]


@pytest.mark.parametrize("grid", [study.STUDY_GRID, study.QUICK_GRID, GRID], ids=["study", "quick", "test"])
def test_the_grid_follows_what_the_methods_declare(grid):
    """Every registered method is in the grid, after the method it linearizes, with one variant per
    epoch it is taken at; each training option goes to exactly the methods that have it."""
    methods = [v.method for v in grid.variants]
    assert set(methods) == set(METHODS.list())
    training = dict(grid.training)
    for i, variant in enumerate(grid.variants):
        options = grid.method_options(variant)
        assert {k for k in training if k in options} == {k for k in training if k in option_names(variant.method)}
        if linearizes(variant.method) is None:
            assert variant.label == variant.method and AT_EPOCH not in options
            continue
        assert methods.index(linearizes(variant.method)) < i
        k = options[AT_EPOCH]
        assert variant.label == f"{variant.method}@{'end' if k == training['epochs'] else k}"
    assert study.reference(methods) in methods and linearizes(study.reference(methods)) is None
    assert study.display_order(["ntk", "taylor", "nn", "entk"]) == ["nn", "entk", "taylor", "ntk"]
    assert [v.label for v in study.make_grid(epochs=3, at_epochs=(1,), methods=("taylor", "nn")).variants] == \
        ["nn", "taylor@1", "taylor@end"]


def test_run_study_runs_every_task_variant_noise_size_and_seed(store):
    _, _, results = store
    assert {r.status for r in results} == {"FINISHED"}
    # 7 variants × (2 sizes at p=0 + 1 size at p=0.5) × 2 seeds × 2 tasks
    assert len(results) == 7 * 3 * 2 * 2
    assert {r.task for r in results} == {"iris", "teacher"} and {r.n_train for r in results} == {40, 80}


def test_report_has_every_section_table_and_plot(store):
    uri, root, _ = store
    html_path = study.render_report("iris", uri, root / "site")
    md = (root / "site" / "study-iris.md").read_text()
    page = html_path.read_text()
    assert html_path == root / "site" / "study-iris.html"
    for heading, question in study.SECTIONS:
        assert f'<h2 id="{anchor(heading)}">{heading}</h2>' in page and f"## {heading}" in md
        assert f"*{escape_markdown(question)}*" in md and html.escape(question) in page
    accuracy = _section(md, "Accuracy by method")
    ci = r"[-+]?[\d.]+ \\\[[-+]?[\d.]+, [-+]?[\d.]+\\\]"  # mean [lo, hi], brackets escaped in Markdown
    for task in ("iris", "teacher"):
        for variant in ("nn", "taylor@0", "taylor@end", "entk@0", "entk@end", "ntk", "nngp"):
            assert re.search(rf"^\| {task} \| {variant} \| 80 \| {ci} \| .* \| 2 \| \w{{8}} \w{{8}} \|$",
                             accuracy, re.M), variant
    noise = _section(md, "Label noise: memorization vs generalization")
    for p in ("0", "0.5"):
        for variant in ("nn", "taylor@0", "entk@0", "ntk", "nngp"):
            assert f"| iris | {variant} | {p} |" in noise
    assert "| iris | nn | 40 |" in _section(md, "Learning curves")
    distance = _section(md, "Kernel distance and linearization gap over training")
    assert "| iris | 0.5 | nn |" in distance
    assert re.search(rf"^\| iris \| 0 \| taylor@0 \| — \| {ci} \| {ci} \| {ci} \| 2 \|", distance, re.M)
    for heading, _ in study.SECTIONS:  # every section answers its question with numbers, first thing
        answers = _section(md, heading).split("\n\n")[1]
        assert answers.startswith("- ") and re.search(r"\d", answers), heading
    assert page.count("<svg") == 4  # energy, label noise, distances, learning curves
    assert "<script" not in page and not re.search(r"(src|href)=\"https?:", page)


def test_every_number_traces_to_its_runs(store):
    """The accuracy table's pooled accuracies and Wilson intervals recomputed from the MLflow runs
    its row names, with the test set sizes they logged."""
    uri, root, _ = store
    study.render_report("iris", uri, root / "trace")
    frame = runs_frame(uri)
    lines = [line for line in _section((root / "trace" / "study-iris.md").read_text(), "Accuracy by method").splitlines()
             if line.startswith(("| iris |", "| teacher |"))]
    assert len(lines) == 14  # 7 variants × 2 tasks
    for line in lines:
        cells = [c.strip().replace("\\", "") for c in line.strip("|").split("|")]
        runs = [frame[frame.run_id.str.startswith(r)] for r in cells[8].split()]
        assert all(len(r) == 1 for r in runs), cells
        runs = [r.iloc[0] for r in runs]
        assert {(r["params.task"], r["params.n_train"], r["params.task.label_noise"]) for r in runs} == {(cells[0], cells[2], "0.0")}
        accuracy = [r["metrics.test_accuracy"] for r in runs]
        p, lo, hi, n = study.proportion(accuracy, [int(r["params.task.n_test"]) for r in runs])
        assert cells[3] == f"{100 * p:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" and n == int(cells[7]) == 2
        assert 0 <= lo <= p <= hi <= 1
        low, high = sorted(accuracy)
        assert cells[4] == f"{100 * low:.1f}–{100 * high:.1f}"


def test_runs_are_tagged_and_linearizations_get_their_gap(store):
    uri, root, _ = store
    frame = runs_frame(uri)
    assert set(frame["tags.ntkbench_study"]) == {"iris"} and frame["tags.ntkbench_study_id"].nunique() == 1
    labels = {v.label: v.method for v in GRID.variants}
    assert all(labels[v] == m for v, m in zip(frame[f"tags.{study.VARIANT_TAG}"], frame["params.method"]))
    linear = frame[frame["params.method"].isin(["taylor", "entk"])]
    assert linear["metrics.linearization_gap_rms"].notna().all()
    taylor0 = linear[(linear["params.method"] == "taylor") & (linear["params.method.at_epoch"] == "0")]
    assert (taylor0["metrics.linearization_gap_rms"] > 0).all()  # nn trained 2 epochs away from θ0
    other = frame[~frame["params.method"].isin(["taylor", "entk"])]
    assert other["metrics.linearization_gap_rms"].isna().all()


def test_ordinary_runs_and_other_studies_stay_out_of_the_report(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    small = study.make_grid(epochs=1, at_epochs=(), label_noise=(0.0,), n_trains=(30,), seeds=(0,), teacher=False,
                            task_options=(("n_test", 20),), methods=("nn",))
    runner.run(task="iris", method="ntk", options={"task.n_train": 30, "task.n_test": 20}, tracking_uri=uri)
    study.run_study("iris", arch_options=ARCH, tracking_uri=uri, grid=small, device="cpu")
    (second,) = study.run_study("iris", arch_options=ARCH, tracking_uri=uri, grid=small, device="cpu")
    ids = sorted(set(runs_frame(uri)["tags.ntkbench_study_id"].dropna()))
    assert len(ids) == 2
    latest = study.render_report("iris", uri, tmp_path / "a").read_text()
    first = study.render_report("iris", uri, tmp_path / "b", study_id=ids[0]).read_text()
    assert f"Study {ids[1]}: 1 finished runs" in latest and f"Study {ids[0]}: 1 finished runs" in first
    assert "| iris | ntk |" not in (tmp_path / "a" / "study-iris.md").read_text()
    missing = study.render_report("iris", uri, tmp_path / "c", study_id="iris-nope").read_text()
    assert "No study iris-nope yet" in missing
    MlflowClient(uri).delete_tag(second.run_id, FINGERPRINT_TAG)  # as a run that ntkbench's runner did not write
    assert f"No study {ids[1]} yet" in study.render_report("iris", uri, tmp_path / "d").read_text()


def test_intervals_and_correlations_are_exact():
    mean, lo, hi, n = study.interval([1.0, 2.0, 3.0, math.nan])
    half = 4.302652729749464 / math.sqrt(3)  # t_{0.975, 2} · s / √n with s = 1
    assert (mean, n) == (2.0, 3) and lo == pytest.approx(2 - half, rel=1e-12) and hi == pytest.approx(2 + half, rel=1e-12)
    assert study.interval([5.0])[:1] == (5.0,) and math.isnan(study.interval([5.0])[1])
    assert study.interval([0.0, 1.0], within=(0, 1))[1:3] == (0, 1)  # the t-interval [−5.85, 6.85] kept to [0, 1]
    assert study.interval([0.5, 0.9, 0.95], within=(0, 1))[2] == 1  # [0.171, 1.40]: only its top is cut
    assert study.interval([])[3] == 0
    r, lo, hi, n = study.correlation([1, 2, 3, 4, 5], [2, 4, 5, 4, 5])
    assert r == pytest.approx(0.7745966692414834) and n == 5 and lo < r < hi
    assert lo == pytest.approx(math.tanh(math.atanh(r) - 1.959963984540054 / math.sqrt(2)))
    assert math.isnan(study.correlation([1, 1, 1], [1, 2, 3])[0])  # constant input: no r, not a warning


def test_report_is_deterministic_and_the_cli_renders_it(store, capsys):
    uri, root, _ = store
    first = study.render_report("iris", uri, root / "a")
    assert cli.main(["report", "--task", "iris", "--tracking-uri", uri, "--out", str(root / "b")]) == 0
    second = root / "b" / "study-iris.html"
    assert first.read_bytes() == second.read_bytes()
    assert (root / "a" / "study-iris.md").read_bytes() == (root / "b" / "study-iris.md").read_bytes()
    assert "report:" in capsys.readouterr().out


def test_an_empty_store_gives_the_no_runs_page(tmp_path):
    uri = f"sqlite:///{tmp_path}/none.db"
    page = study.render_report("wine", uri, tmp_path / "out").read_text()
    md = (tmp_path / "out" / "study-wine.md").read_text()
    assert "No study runs yet" in page and "ntkbench study --task wine" in page and "<h2>" not in page
    assert "No study runs yet" in md and "`ntkbench study --task wine`" in md
    assert not (tmp_path / "none.db").exists()


def _table(md: str, heading: str, first_column: str = "task") -> list[list[str]]:
    """The rows of the tables of section ``heading`` whose first column is ``first_column``, as
    lists of cells with the Markdown escapes removed."""
    return [list(r.values()) for r in _rows(md, heading) if next(iter(r)) == first_column]


def _numbers(cell: str) -> list[float]:
    return [float(n.replace("−", "-")) for n in re.findall(r"[−+-]?\d+(?:\.\d+)?", cell)]


CELL = r"[−+]?[\d.]+(?: \[[−+]?[\d.]+, [−+]?[\d.]+\])?"  # a number, maybe with its [lo, hi]


def _check_findings(md: str, page: str) -> None:
    """The findings come first, two per task, each linking to its section; every number quoted
    is its table's cell, and each verdict is what that cell's interval says (the data cannot
    decide where it holds the value compared with)."""
    assert md.index("## Findings") < min(md.index(f"## {escape_markdown(h)}") for h, _ in study.SECTIONS)
    found = _section(md, "Findings").replace("\\", "")
    accuracy = {(r[0], r[1]): r for r in _table(md, "Accuracy by method")}
    energy = {(r[0], r[1], r[2]): r for r in _table(md, "Target energy in the top eigenmodes")}
    r_table = {r[0]: r for r in _table(md, "Target energy in the top eigenmodes") if len(r) == 3}
    for link in ("accuracy-by-method", "target-energy-in-the-top-eigenmodes"):
        assert f'id="{link}"' in page and f'href="#{link}"' in page and f"](#{link}))" in md
    tasks = re.findall(r"^\*\*(\S+)\*\*$", found, re.M)
    assert tasks == list(dict.fromkeys(t for t, _ in accuracy)) and len(tasks) == 2
    for task in tasks:
        block = found.split(f"**{task}**", 1)[1].split("**", 1)[0]
        space, linear = [line for line in block.splitlines() if line.startswith("- ")]
        assert study.QUESTIONS[0] in space and study.QUESTIONS[1] in linear

        # How do the linearizations compare with the network?
        nn_cell = re.search(rf"nn reaches ({CELL}) % test accuracy at n_train (\d+)\.", linear)
        assert nn_cell.group(1) == accuracy[task, "nn"][3] and nn_cell.group(2) == accuracy[task, "nn"][2]
        quoted = re.findall(rf"(\S+@\S+) \(({CELL}) %, ({CELL}) points\)", linear)
        assert sorted(v for v, _, _ in quoted) == sorted(v for t, v in accuracy if t == task and "@" in v)
        parts = re.split(r"; (?=above it|below it|the data cannot decide)", linear.split("Its linearizations: ")[1])
        for variant, cell, diff in quoted:
            row = accuracy[task, variant]
            assert (cell, diff) == (row[3], row[5]), variant
            _, lo, hi = _numbers(diff)
            verdict = "above it, " if lo > 0 else "below it, " if hi < 0 else "the data cannot decide"
            assert [p for p in parts if f"{variant} (" in p][0].startswith(verdict), (variant, diff, linear)

        # Does the kernel's feature space hold the target?
        shares = re.findall(rf"({CELL}) for (\S+?)(?=,| and| against)", space.split("eigenmodes is ")[1])
        kernels = {v for t, v, p in energy if t == task and p == "0" and ("@" not in v or v.endswith("@0"))}
        assert sorted(v for _, v in shares) == sorted(kernels) and kernels
        baseline = float(re.search(r"against ([\d.]+) \(10/n_train\)", space).group(1))
        assert baseline == pytest.approx(10 / int(accuracy[task, "ntk"][2]), rel=5e-3)
        said = {verdict: set(re.findall(r"[\w@]+", m.group(1))) - {"and"} if m else set()
                for verdict, m in ((v, re.search(rf"{v} for ([^;.]*)", space))
                                   for v in ("more than that", "less", "the data cannot decide"))}
        for cell, variant in shares:
            assert cell == energy[task, variant, "0"][4], variant
            bounds = _numbers(cell)[1:]
            verdict = ("more than that" if bounds and bounds[0] > baseline else
                       "less" if bounds and bounds[1] < baseline else "the data cannot decide")
            assert {v for v, names in said.items() if variant in names} == {verdict}, (variant, cell, space)
        r_cell = r_table[task][2]
        if r_cell != "—":
            assert f"r = {r_cell}" in space
        r_bounds = _numbers(r_cell)[1:]
        decided = bool(r_bounds) and (r_bounds[0] > 0 or r_bounds[1] < 0)
        assert ("the data cannot decide from the" in space) != decided


def test_findings_open_the_report_and_match_its_tables(store):
    """The findings regenerated from the study's store (see :func:`_check_findings`)."""
    uri, root, _ = store
    study.render_report("iris", uri, root / "findings")
    _check_findings((root / "findings" / "study-iris.md").read_text(), (root / "findings" / "study-iris.html").read_text())


def test_the_committed_digits_report_findings_match_its_tables():
    """The committed report of make study TASK=digits (396 runs, 3 seeds): its findings say
    "rises", "more than that", "above it" and "the data cannot decide", each from its table."""
    site = Path(__file__).resolve().parents[1] / "leaderboard" / "site"
    _check_findings((site / "study-digits.md").read_text(), (site / "study-digits.html").read_text())


def test_the_probe_size_is_read_from_the_runs(store):
    """The distance note names the probe the runs used (nn's default probe_size, or n_train when
    smaller), not a number written into the text."""
    uri, root, _ = store
    study.render_report("iris", uri, root / "probe")
    note = _section((root / "probe" / "study-iris.md").read_text(), "Kernel distance and linearization gap over training")
    default = next(f.default for f in dataclasses.fields(METHODS.get("nn")) if f.name == "probe_size")
    assert f"on a probe of the first {min(default, 80)} training inputs" in note and "64-input" not in note
