"""The image study: several architectures, flips, and the published directions with verdicts.

A miniature study (two 4×4 CNNs, tiny n and width) runs into a temporary SQLite store; its
report must have every section, and every published direction must quote its tables' cells and
draw the verdict those cells' intervals give. The same check runs on the committed
study-mnist5k report, and the verdict rules run on a fixed table built by hand.
"""

import re
from pathlib import Path

import pandas as pd
import pytest

from ntkbench import study
from ntkbench.study import published
from ntkbench.study.grid import IMAGE_GRID, StudyArch, configure, make_grid, study_grid
from ntkbench.study.report import DIRECTIONS
from ntkbench.study.sections import anchor
from report_tables import rows as _rows
from report_tables import section as _section

ARCHS = (StudyArch("flat", "cnn", (("depth", 1), ("channels", 4), ("readout", "flatten")), size=4),
         StudyArch("gap", "cnn", (("depth", 1), ("channels", 4), ("readout", "gap")), size=4))
GRID = make_grid(epochs=2, at_epochs=(0, 1), end=False, diagnostics_every=1, training=(("batch_size", 16),),
                 method_options={"entk": (("centered", True),)}, label_noise=(0.0,), n_trains=(20, 40),
                 seeds=(0, 1), teacher=False, task_options=(("n_test", 40),), archs=ARCHS, flip_n_trains=(20,))
CELL = r"[−+-]?[\d.]+(?: \[[−+-]?[\d.]+, [−+-]?[\d.]+\])?"
WORD = r"(reproduced|not reproduced|undecided at this size)"
HEADINGS = [h for h, _ in study.SECTIONS] + list(published.HEADINGS)


@pytest.fixture(scope="module")
def report(tmp_path_factory, frozen_gc):
    root = tmp_path_factory.mktemp("images")
    uri = f"sqlite:///{root}/mlflow.db"
    records = study.run_study("mnist5k", tracking_uri=uri, grid=GRID, device="cpu", quiet=True,
                              kernel_cache=root / "kernels")
    page = study.render_report("mnist5k", uri, root / "site")
    return records, page.read_text(), (root / "site" / "study-mnist5k.md").read_text()


def _sign(cell: str) -> int:
    bounds = [float(v.replace("−", "-")) for v in re.findall(r"[−+-]?[\d.]+", cell)][1:]
    return 0 if not bounds else 1 if bounds[0] > 0 else -1 if bounds[1] < 0 else 0


def _directions(md: str) -> dict[str, str]:
    """Published direction lines by the section they link to."""
    lines = [line for line in _section(md, DIRECTIONS).replace("\\", "").splitlines() if line.startswith("- **")]
    return {re.search(r"\(\[([^\]]+)\]\(#[\w-]+\)\)$", line).group(1): line for line in lines}


def _check_directions(md: str) -> None:
    """Each direction quotes its section's table cells and draws the verdict they give."""
    found = _directions(md)
    assert list(found) == list(published.HEADINGS)

    kernels = {(r["architecture"], r["n_train"]): r for r in _rows(md, published.KERNELS)}
    text = found[published.KERNELS].split(". Learning curves")[0]
    archs = list(dict.fromkeys(a for a, _ in kernels))
    for arch in archs:
        m = re.search(rf"(?<=[:;] ){re.escape(arch)} at n_train ([\d,]+): (.*?) — {WORD}(?=;|$)", text)
        row = kernels[arch, m.group(1)]
        assert m.group(1) == max((n for a, n in kernels if a == arch), key=lambda n: int(n.replace(",", "")))
        quoted = re.findall(rf"(\S+) − (\S+) ({CELL}) points", m.group(2))
        assert quoted and all(row[f"{v} − {ref}, points"] == cell for v, ref, cell in quoted), (arch, m.group(2))
        signs = [_sign(cell) for _, _, cell in quoted]
        want = "reproduced" if all(s < 0 for s in signs) else "not reproduced" if any(s > 0 for s in signs) \
            else "undecided at this size"
        assert m.group(3) == want, (arch, quoted)

    pairs = {(r["GAP"], r["Flatten"], r["variant"]): r for r in _rows(md, published.GAP_FLATTEN)}
    kern, nets = found[published.GAP_FLATTEN].split(". Trained networks: ")
    for part in (kern, nets):
        said = re.findall(rf"(\S+) \([^()]*\) against (\S+) \([^()]*\) at n_train [\d,]+: (.*?) — {WORD}", part)
        assert len(said) == len({(g, f) for g, f, _ in pairs}) > 0, part
        for gap, flat, body, word in said:
            quoted = re.findall(rf"(\S+) ({CELL}) points", body)
            assert quoted and all(pairs[gap, flat, v]["GAP − Flatten, points"] == c for v, c in quoted)
            signs = [_sign(c) for _, c in quoted]
            assert word == ("reproduced" if all(s > 0 for s in signs) else "not reproduced" if all(s < 0 for s in signs)
                            else "undecided at this size"), body

    later = _rows(md, published.LATER)
    said = re.findall(rf"(\S+)@(\d+) on (\S+): ({CELL}) points from \S+ at epoch (\d+), ({CELL}) at epoch \d+ of \d+, "
                      rf"a change of ({CELL}) — {WORD}", found[published.LATER])
    assert len(said) == len({(r["architecture"], r["variant"].split("@")[0]) for r in later}) > 0
    for method, k, arch, d0, k0, dk, gain, word in said:
        first = next(r for r in later if r["architecture"] == arch and r["variant"] == f"{method}@{k0}")
        last = next(r for r in later if r["architecture"] == arch and r["variant"] == f"{method}@{k}")
        assert (first["− nn's, points"], last["− nn's, points"], last["− at the first k, points"]) == (d0, dk, gain)
        want = ("not reproduced" if _sign(dk) < 0 else "reproduced" if _sign(d0) < 0 and _sign(gain) > 0
                else "undecided at this size")
        assert word == want, (method, arch)

    stats = {r["statistic"][:20]: r["estimate"] for r in _rows(md, published.EXPLAINS) if "statistic" in r}
    r_cell, gain_cell = stats.values()
    m = re.search(rf"r = ({CELL}) — {WORD}\. .* changes by ({CELL}) .* — {WORD}\.", found[published.EXPLAINS])
    assert (m.group(1), m.group(3)) == (r_cell, gain_cell)
    for cell, word in ((m.group(1), m.group(2)), (m.group(3), m.group(4))):
        assert word == {1: "reproduced", -1: "not reproduced", 0: "undecided at this size"}[_sign(cell)]

    flips = _rows(md, published.FLIPS)
    for arch in dict.fromkeys(r["architecture"] for r in flips):
        ranks = {r["variant"]: (int(r["rank without"]), int(r["rank with"])) for r in flips if r["architecture"] == arch}
        m = re.search(rf"{re.escape(arch)} at n_train [\d,]+: the ranking (does not change|changes, swapping (.*?))(?:;|\. )",
                      found[published.FLIPS])
        swapped = re.findall(r"(\S+) and (\S+) \((?:decided|within the intervals)\)", m.group(2) or "")
        assert (m.group(1) == "does not change") == all(a == b for a, b in ranks.values())
        assert {frozenset(p) for p in swapped} == {frozenset((u, w)) for u in ranks for w in ranks
                                                   if ranks[u][0] < ranks[w][0] and ranks[u][1] > ranks[w][1]}


def test_the_miniature_image_study_has_every_section(report):
    records, page, md = report
    assert len(records) == 2 * 7 * (2 * 2 + 2) and all(r.status == "FINISHED" for r in records)
    assert md.index(f"## {DIRECTIONS}") < md.index("## Accuracy by method")
    for heading in ["Findings", DIRECTIONS, *HEADINGS]:
        assert f"## {heading}" in md and f'id="{anchor(heading)}"' in page, heading
    for heading in published.HEADINGS:
        assert _rows(md, heading), heading
    accuracy = _rows(md, "Accuracy by method")
    assert {r["task"] for r in accuracy} == {"mnist5k flat-4", "mnist5k gap-4"}  # flip runs stay in their section
    assert {r["variant"] for r in _rows(md, published.FLIPS)} == {"nn", "entk@0", "entk@1", "taylor@0", "taylor@1",
                                                                 "nngp", "ntk"}


def test_the_miniature_directions_agree_with_their_tables(report):
    _check_directions(report[2])


def test_the_committed_mnist5k_report_directions_agree_with_their_tables():
    site = Path(__file__).resolve().parents[1] / "leaderboard" / "site"
    md = (site / "study-mnist5k.md").read_text()
    _check_directions(md)
    assert "cnn-gap-7" in md and "wrn-gap-7" in md and "cnn-flatten " in md


def _frame(accuracies: dict[tuple[str, str], float], n_test: int = 2000) -> pd.DataFrame:
    """A study table by hand: (arch, variant) → test accuracy, 3 seeds each, n_train 100."""
    rows = []
    for (arch, variant), acc in accuracies.items():
        method, _, k = variant.partition("@")
        for seed in range(3):
            rows.append({"task": f"mnist5k {arch}", "arch": arch, "network": "cnn",
                         "readout": "gap" if "gap" in arch else "flatten", "size": 7, "method": method,
                         "variant": variant, "epoch": int(k or 0), "epochs": 30 if method != "ntk" else 0, "n": 100,
                         "p": 0.0, "seed": seed, "run_id": f"{arch}{variant}{seed}".ljust(8, "x"), "n_test": n_test,
                         "n_fit": 100, "probe": 32.0, "test": acc, "train": 1.0, "fit": 1.0, "total": 1.0, "peak": 1.0,
                         "e1": float("nan"), "e10": float("nan"), "e100": float("nan"), "kdist": 0.1 * (1 + seed),
                         "wdist": 0.1, "gap": 0.1, "agree": 0.9, "rate": float("nan"), "flip": False,
                         "role": {"nn": "reference", "entk": "linearization"}.get(method, "other")})
    return pd.DataFrame(rows)


def test_verdicts_follow_the_intervals_on_a_fixed_table():
    """Lee: kernels 15 points below the network (reproduced), 10 above (not), equal (undecided);
    Arora: GAP 10 points above Flatten for the kernel, equal for the network; Fort: entk@13 equal
    to nn after entk@0 15 below (reproduced). 3 × 2000 test predictions: a Newcombe interval of
    ±2 points at most."""
    frame = _frame({("cnn-flatten", "nn"): 0.80, ("cnn-flatten", "ntk"): 0.65,
                    ("cnn-flatten", "entk@0"): 0.65, ("cnn-flatten", "entk@13"): 0.80,
                    ("cnn-gap", "nn"): 0.80, ("cnn-gap", "ntk"): 0.95,
                    ("cnn-gap", "entk@0"): 0.60, ("cnn-gap", "entk@13"): 0.70,
                    ("wrn", "nn"): 0.80, ("wrn", "ntk"): 0.80, ("wrn", "entk@0"): 0.80, ("wrn", "entk@13"): 0.80})
    frame.loc[frame.arch == "cnn-gap", "test"] += (frame[frame.arch == "cnn-gap"].variant == "ntk") * -0.05
    directions = {d.link: d.text for d in published.published(frame)[0]}
    lee = directions[published.KERNELS]
    assert re.search(r"cnn-flatten at n_train 100: [^;]* — reproduced", lee)
    assert re.search(r"cnn-gap at n_train 100: [^;]* — not reproduced", lee)
    assert re.search(r"wrn at n_train 100: [^;]* — undecided at this size", lee)
    arora = directions[published.GAP_FLATTEN]
    assert re.search(r"Kernels, .*: ntk \+25\.0 \[[^]]+\] points — reproduced", arora)
    assert re.search(r"Trained networks: .*: nn \+0\.0 \[[^]]+\] points — undecided at this size", arora)
    fort = directions[published.LATER]
    assert re.search(r"entk@13 on cnn-flatten: [^;]* — reproduced", fort)
    assert re.search(r"entk@13 on cnn-gap: [^;]* — not reproduced", fort)
    assert re.search(r"entk@13 on wrn: [^;]* — undecided at this size", fort)


def test_the_image_grid_and_its_settings():
    """mnist5k runs the image grid: 4 architectures (depth-3 CNNs, WRN without normalization),
    k = 5 and 13 of 30 epochs bracketing 15–45%, 3 seeds; --set grid.* and task.* change it and an
    unknown name is one line naming the valid ones."""
    grid = study_grid("mnist5k")
    assert grid is IMAGE_GRID and len(grid.archs) == 4 and grid.seeds == (0, 1, 2)
    assert all(dict(a.options).get("depth", 10) >= 3 for a in grid.archs)
    assert dict(grid.archs[-1].options)["norm"] == "none"
    ks = sorted({dict(v.options)["at_epoch"] for v in grid.variants if "at_epoch" in dict(v.options)})
    epochs = dict(grid.training)["epochs"]
    assert ks[0] == 0 and ks[1] / epochs <= 0.15 and ks[-1] / epochs >= 0.45  # k brackets 15–45%
    bigger = configure(grid, {"grid.n_trains": [500, 1000], "grid.size": 14, "task.n_test": 1000})
    assert bigger.n_trains == (500, 1000) and {a.size for a in bigger.archs} == {None, 14}
    assert [a.label for a in bigger.archs] == ["cnn-flatten", "cnn-flatten-14", "cnn-gap-14", "wrn-gap-14"]
    assert [a.label for a in grid.archs] == ["cnn-flatten", "cnn-flatten-7", "cnn-gap-7", "wrn-gap-7"]
    assert dict(bigger.task_options)["n_test"] == 1000
    quick = study_grid("mnist5k", quick=True)
    assert quick.seeds == (0,) and len(quick.n_trains) == 1 == len(quick.flip_n_trains)
    for bad, message in (({"grid.epoch": 3}, "expected task.NAME or grid.NAME with NAME one of n_trains, seeds"),
                         ({"arch.seeds": [0]}, "unknown study setting 'arch.seeds'"),
                         ({"grid.seeds": [0.5]}, "grid.seeds takes a list of integers"),
                         ({"grid.size": [7, 14]}, "grid.size takes one integer")):
        with pytest.raises(ValueError, match=message):
            configure(grid, bad)
    assert configure(study.STUDY_GRID, {"grid.seeds": 4}).seeds == (4,)
