"""The study grid, its runs into a temporary SQLite store, and the rendered report."""

import html
import re

import pytest

from ntkbench import cli, study
from ntkbench.leaderboard.render import escape_markdown

ARCH = {"depth": 1, "width": 16}
GRID = study.make_grid(
    epochs=2, at_epochs=(0,), label_noise=(0.0, 0.5), n_trains=(40, 80), seeds=(0, 1), diagnostics_every=1,
    task_options=(("n_test", 30),),
    teacher_options=(("n_test", 30), ("num_classes", 3), ("input_shape", (4,)), ("width", 16)),
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    uri = f"sqlite:///{root}/mlflow.db"
    results = study.run_study("iris", arch_options=ARCH, tracking_uri=uri, grid=GRID, device="cpu")
    return uri, root, results


def test_grids_are_declared():
    labels = [v.label for v in study.STUDY_GRID.variants]
    assert labels == ["nn", "taylor@0", "taylor@1", "taylor@5", "taylor@end", "entk@0", "entk@1", "entk@5",
                      "entk@end", "ntk", "nngp"]
    assert dict(study.STUDY_GRID.variants[4].options) == {"linearize_at_epoch": 40}
    assert study.STUDY_GRID.label_noise == (0.0, 0.2, 0.5, 1.0) and study.STUDY_GRID.seeds == (0, 1, 2)
    quick = study.QUICK_GRID
    assert (quick.seeds, quick.label_noise, quick.n_trains, quick.epochs) == ((0,), (0.0, 0.5), (100,), 5)
    assert "taylor@end" in [v.label for v in quick.variants] and "taylor@5" not in [v.label for v in quick.variants]


def test_run_study_runs_every_task_variant_noise_size_and_seed(store):
    _, _, results = store
    assert {r.status for r in results} == {"FINISHED"}
    # 7 variants × (2 sizes at p=0 + 1 size at p=0.5) × 2 seeds × 2 tasks
    assert len(results) == 7 * 3 * 2 * 2
    assert {r.task for r in results} == {"iris", "teacher"} and {r.n_train for r in results} == {40, 80}


def _section(md: str, heading: str) -> str:
    return md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_report_has_every_section_table_and_plot(store):
    uri, root, _ = store
    html_path = study.render_report("iris", uri, root / "site")
    md = (root / "site" / "study-iris.md").read_text()
    page = html_path.read_text()
    assert html_path == root / "site" / "study-iris.html"
    for heading, question in study.SECTIONS:
        assert f"<h2>{heading}</h2>" in page and f"## {heading}" in md
        assert f"*{escape_markdown(question)}*" in md and html.escape(question) in page
    accuracy = _section(md, "Accuracy by method")
    for task in ("iris", "teacher"):
        for variant in ("nn", "taylor@0", "taylor@end", "entk@0", "entk@end", "ntk", "nngp"):
            assert re.search(rf"^\| {task} \| {variant} \| 80 \| [\d.]+ ± [\d.]+ \| .* \| 2 \|$", accuracy, re.M), variant
    noise = _section(md, "Label noise: memorization vs generalization")
    for p in ("0", "0.5"):
        for variant in ("nn", "taylor@0", "entk@0", "ntk", "nngp"):
            assert f"| iris | {variant} | {p} |" in noise
    assert "| iris | nn | 40 |" in _section(md, "Learning curves")
    assert "| iris | 0.5 |" in _section(md, "Kernel and weight distance over training")
    assert page.count("<svg") == 4  # energy, label noise, distances, learning curves
    assert "<script" not in page and not re.search(r"(src|href)=\"https?:", page)


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
