"""The leaderboard page in a real browser: headless Chromium (Debian's ``chromium`` package)
renders the tables and plots; with selenium and chromedriver, clicking a header sorts the table,
and at 360, 768 and 1400 px the page never scrolls sideways, every table's method and accuracy
cells stay in view, and no plot's text leaves its plot. The layout is checked on a leaderboard of
real runs (iris and wine, a local SQLite store and a committed entry) and on one with chosen
figures and hostile names. Full-page screenshots go to pytest's temporary folder
(``screenshots*/<page>-<width>.png``). Skipped, with the reason, where Chromium (or the driver)
is missing."""

from __future__ import annotations

import base64
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from board_records import local, make_record

from ntkbench import runner
from ntkbench.leaderboard import build
from ntkbench.leaderboard.export import make_entry
from ntkbench.leaderboard.ranking import Result, aggregate
from ntkbench.leaderboard.render import ACCURACY, COLUMNS, render

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
SCRIPT = "<script>alert(1)</script>"
WIDTHS = (360, 768, 1400)
# (task, method, n_train, per-seed accuracies, time_total_s)
SPECS = [
    ("digits", "nn", 500, (0.95, 0.96, 0.97), 10.0),
    ("digits", "nn", 1000, (0.97, 0.98, 0.99), 20.0),
    ("digits", "ntk", 500, (0.93, 0.94, 0.95), 2.0),
    ("digits", "nngp", 500, (0.85, 0.86, 0.87), 1.5),
    ("digits", "entk", 500, (0.86, 0.86, 0.86), 1.0),
    ("digits", "taylor", 500, (0.90, 0.91, 0.92), 30.0),
    ("wine", SCRIPT, 100, (0.90, 0.91, 0.92), 3.0),
    ("wine", "a|b", 100, (0.80, 0.82, 0.84), 1.0),
]
SMALL = {"task.n_test": 30, "arch.depth": 1, "arch.width": 32, "nn.epochs": 3, "taylor.epochs": 3}

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not found: apt-get install -y chromium chromium-driver"
)


def make_results() -> list[Result]:
    return local(*(make_record(task, method, seed=seed, acc=acc, total=total, n_train=n)
                   for task, method, n, accs, total in SPECS for seed, acc in enumerate(accs)))


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("leaderboard")
    render(aggregate(make_results()), out)
    return out / "site" / "index.html"


@pytest.fixture(scope="module")
def real_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The leaderboard of real runs: iris (nn, ntk, nngp at two n_train) and wine (nn at two
    widths, taylor, entk), 2 seeds each, in a SQLite store; wine's entk runs exported as an entry."""
    tmp = tmp_path_factory.mktemp("real")
    uri = f"sqlite:///{tmp}/mlflow.db"
    runner.run(task="iris", method="nn,ntk,nngp", seeds=(0, 1), options=SMALL, n_trains=(30, 90), tracking_uri=uri)
    wine = runner.run(task="wine", method="nn,taylor,entk", seeds=(0, 1), options={**SMALL, "task.n_train": 80},
                      tracking_uri=uri)
    runner.run(task="wine", method="nn", seeds=(0, 1), options={**SMALL, "task.n_train": 80, "arch.width": 64},
               tracking_uri=uri)
    entry = make_entry([r for r in wine if r.method == "entk"])
    (tmp / "entries").mkdir()
    (tmp / "entries" / entry.file_name).write_text(entry.to_text())
    rows, problems = build(uri, tmp / "entries", tmp / "board")
    assert not problems and len(rows) == 10 and {r.source for r in rows} == {"local", "self-reported"}
    return tmp / "board" / "site" / "index.html"


def chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp)


class Tables(HTMLParser):
    """Cell texts of the body of every leaderboard table (class ``sortable``), and a count of
    each start tag."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.tags: dict[str, int] = {}
        self._cell: list[str] | None = None
        self._in_body = False
        self._in_board = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "table":
            self._in_board = "sortable" in (dict(attrs).get("class") or "")
            if self._in_board:
                self.tables.append([])
        elif tag == "tbody" and self._in_board:
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.tables[-1].append([])
        elif tag == "td" and self._in_body:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        elif tag == "td" and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@needs_chromium
def test_dom_has_tables_and_plots(page: Path, tmp_path: Path) -> None:
    done = chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = Tables()
    dom.feed(done.stdout)
    assert len(dom.tables) == 2
    digits, wine = dom.tables
    method, n_train = COLUMNS.index("method"), COLUMNS.index("n_train")
    assert sorted((row[method], row[n_train]) for row in digits) == sorted(
        (m, f"{n:,}") for t, m, n, *_ in SPECS if t == "digits")
    assert [row[method] for row in wine] == [SCRIPT, "a|b"]  # shown as text, rank order
    assert [row[0] for row in digits] == ["1", "2", "3", "4", "5", "6"]
    assert all(len(row) == len(COLUMNS) for row in digits + wine)
    # plots: accuracy/time and seed spread per task, learning curves for digits only; each with its data
    assert dom.tags.get("svg", 0) == 5 and dom.tags.get("table", 0) == 2 + 5
    assert dom.tags.get("script", 0) == 1  # the injected method name stayed text


@pytest.fixture(scope="module")
def driver():  # type: ignore[no-untyped-def]
    if CHROMIUM is None:
        pytest.skip("headless Chromium not found: apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed; the browser tests need it (pip install selenium)"
    )
    if not Path(CHROMEDRIVER).exists():
        pytest.skip(f"{CHROMEDRIVER} not found: apt-get install -y chromium-driver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument("--window-size=1200,900")
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield drv
    drv.quit()


@needs_chromium
def test_click_header_sorts(page: Path, driver) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.get(page.as_uri())
    table = driver.find_element(By.ID, "table-0")
    heads = table.find_elements(By.CSS_SELECTOR, "thead th")
    names = [h.text.replace("\n", " ") for h in heads]

    def column(name: str) -> list[str]:
        i = names.index(name)
        return [tr.find_elements(By.TAG_NAME, "td")[i].text for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")]

    def click(name: str) -> None:
        heads[names.index(name)].click()

    assert column("n_train") == ["1,000", "500", "500", "500", "500", "500"]  # rank order
    click("n_train")  # numeric, not text: 500 < 1000
    assert column("n_train") == ["500", "500", "500", "500", "500", "1,000"]
    assert heads[names.index("n_train")].get_attribute("aria-sort") == "ascending"
    click("method")
    assert column("method") == sorted(column("method")) and column("method")[0] == "entk"
    click("method")  # again: descending
    assert column("method") == sorted(column("method"), reverse=True)
    click("fit time")  # by the seconds behind "800 ms", "16.0 s", ...
    assert column("method") == ["entk", "nngp", "ntk", "nn", "nn", "taylor"]
    click(ACCURACY)  # by the mean, not the text "86.0 ± 0.0 / 3 seeds"
    assert column("method")[2:] == ["taylor", "ntk", "nn", "nn"] and set(column("method")[:2]) == {"entk", "nngp"}
    click("rank")
    assert column("rank") == ["1", "2", "3", "4", "5", "6"]


# Everything the layout promises, measured in the page; returns one line per broken promise and
# the height of the smallest plot text.
LAYOUT = """
const problems = [], W = innerWidth, doc = document.documentElement;
if (doc.scrollWidth > W) problems.push(`the page scrolls sideways: ${doc.scrollWidth} > ${W}`);
document.querySelectorAll("figure details").forEach(d => { d.open = true; });
const inside = (r, box) => r.left >= box.left - 1 && r.right <= box.right + 1;
const view = {left: 0, right: W};
document.querySelectorAll("table.sortable").forEach(table => {
  const wrap = table.parentElement, names = [...table.tHead.rows[0].cells].map(c => c.textContent.trim());
  const keep = ["rank", "method", arguments[0]].map(n => names.indexOf(n));
  for (const end of [false, true]) {
    wrap.scrollLeft = end ? wrap.scrollWidth : 0;
    const box = wrap.getBoundingClientRect();
    [table.tHead.rows[0], ...table.tBodies[0].rows].forEach((row, i) => {
      const rects = keep.map(k => row.cells[k].getBoundingClientRect());
      rects.forEach((r, k) => {
        if (!inside(r, view) || !inside(r, box))
          problems.push(`${table.id} row ${i} ${names[keep[k]]} out of view (scrolled to ${end ? "end" : "start"}): ` +
                        `${r.left}-${r.right} in ${box.left}-${box.right}`);
      });
      for (let k = 1; k < rects.length; k++)
        if (rects[k].left < rects[k - 1].right - 1) problems.push(`${table.id} row ${i}: ${names[keep[k]]} overlaps`);
    });
    if (end) {
      const last = table.tHead.rows[0].cells[names.length - 1].getBoundingClientRect();
      if (!inside(last, box)) problems.push(`${table.id}: the last column cannot be scrolled into view`);
    }
  }
  wrap.scrollLeft = 0;
});
let smallest = Infinity;
document.querySelectorAll("svg.plot").forEach((svg, n) => {
  const s = svg.getBoundingClientRect(), card = svg.closest("figure").getBoundingClientRect();
  if (!inside(s, card) || !inside(s, view)) problems.push(`plot ${n} leaves its card or the page`);
  if (!svg.getAttribute("aria-label") || svg.getAttribute("role") !== "img") problems.push(`plot ${n} has no alt text`);
  svg.querySelectorAll("text").forEach(t => {
    const r = t.getBoundingClientRect();
    if (!r.width) return;
    smallest = Math.min(smallest, r.height);
    if (!inside(r, s) || r.top < s.top - 1 || r.bottom > s.bottom + 1)
      problems.push(`plot ${n}: text "${t.textContent}" overflows its plot`);
  });
});
document.querySelectorAll("figure table.data").forEach((t, n) => {  // it may scroll inside its box
  if (!inside(t.parentElement.getBoundingClientRect(), t.closest("figure").getBoundingClientRect()))
    problems.push(`data table ${n} leaves its card`);
});
return [problems, smallest];
"""


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@needs_chromium
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("which", ["real", "chosen"])
def test_layout_at_every_width(which: str, width: int, request, driver, shots: Path) -> None:  # type: ignore[no-untyped-def]
    path = request.getfixturevalue("real_page" if which == "real" else "page")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    driver.get(path.as_uri())
    assert driver.execute_script("return innerWidth") == width
    height = driver.execute_script("return document.documentElement.scrollHeight")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    (shots / f"{which}-{width}.png").write_bytes(base64.b64decode(shot["data"]))
    problems, smallest = driver.execute_script(LAYOUT, ACCURACY)
    assert not problems, "\n".join(problems)
    assert smallest >= 8, f"the smallest plot text is {smallest:.1f} px tall at {width} px"
    if width >= 1400:  # a wide screen shows whole tables, the Pareto column too
        assert driver.execute_script(
            "return [...document.querySelectorAll('.table-wrap')].every(w => w.scrollWidth <= w.clientWidth)")
