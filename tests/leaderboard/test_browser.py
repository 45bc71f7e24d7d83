"""The leaderboard page in a real browser: headless Chromium (Debian's ``chromium`` package)
renders the tables and plots and takes a screenshot; with selenium and chromedriver, clicking a
header sorts the table. Skipped, with the reason, where Chromium (or the driver) is missing."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from board_records import local, make_record

from ntkbench.leaderboard.ranking import Result, aggregate
from ntkbench.leaderboard.render import render

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
SCRIPT = "<script>alert(1)</script>"
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


def chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp)


class Tables(HTMLParser):
    """Cell texts of every table's body, and a count of each start tag."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.tags: dict[str, int] = {}
        self._cell: list[str] | None = None
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "table":
            self.tables.append([])
        elif tag == "tbody":
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
    assert sorted((row[1], row[3]) for row in digits) == sorted((m, str(n)) for t, m, n, *_ in SPECS if t == "digits")
    assert [row[1] for row in wine] == [SCRIPT, "a|b"]  # shown as text, rank order
    assert [row[0] for row in digits] == ["1", "2", "3", "4", "5", "6"]
    assert all(len(row) == 14 for row in digits + wine)
    # plots: accuracy/time and seed spread per task, learning curves for digits only
    assert dom.tags.get("svg", 0) + dom.tags.get("img", 0) == 5
    assert dom.tags.get("script", 0) == 1  # the injected method name stayed text


@needs_chromium
def test_screenshot(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    done = chromium([f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000, f"screenshot suspiciously small ({len(data)} bytes)"


@pytest.fixture(scope="module")
def driver():  # type: ignore[no-untyped-def]
    if CHROMIUM is None:
        pytest.skip("headless Chromium not found: apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed; the sorting test needs it (pip install selenium)"
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

    driver.get(page.as_uri())
    table = driver.find_element(By.ID, "table-0")
    heads = table.find_elements(By.CSS_SELECTOR, "thead th")
    names = [h.text.replace("\n", " ") for h in heads]

    def column(name: str) -> list[str]:
        i = names.index(name)
        return [tr.find_elements(By.TAG_NAME, "td")[i].text for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")]

    def click(name: str) -> None:
        heads[names.index(name)].click()

    assert column("n_train") == ["1000", "500", "500", "500", "500", "500"]  # rank order
    click("n_train")  # numeric, not text: 500 < 1000
    assert column("n_train") == ["500", "500", "500", "500", "500", "1000"]
    assert heads[names.index("n_train")].get_attribute("aria-sort") == "ascending"
    click("method")
    assert column("method") == sorted(column("method")) and column("method")[0] == "entk"
    click("method")  # again: descending
    assert column("method") == sorted(column("method"), reverse=True)
    click("fit time")  # by the seconds behind "800 ms", "16 s", ...
    assert column("method") == ["entk", "nngp", "ntk", "nn", "nn", "taylor"]
    click("rank")
    assert column("rank") == ["1", "2", "3", "4", "5", "6"]
