"""The leaderboard page's stylesheet and script, inlined by :mod:`ntkbench.leaderboard.render`
(the page needs no server and no CDN).

Layout, from 360 px wide up: the page itself never scrolls sideways. A wide table scrolls inside
its own box (``.table-wrap``) with its first :data:`ntkbench.leaderboard.render.STICKY` columns
(rank, method, accuracy) held in view (``position: sticky``; the script sets their offsets from
the columns' measured widths). Plots sit in a grid of cards at most two wide that falls to one
column when a card would be narrower than 400 px, and each SVG scales down with its card.
"""

from __future__ import annotations

__all__ = ["CSS", "JS"]

CSS = """
:root { color-scheme: light; --fg: #1d2127; --muted: #5b6470; --line: #d8dde3; --head: #f3f5f7; --accent: #2458a6;
        --pareto: #fff8e1; --bg: #fff; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1400px; padding: 1.5rem 1.5rem 3rem; color: var(--fg); background: var(--bg);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       overflow-wrap: break-word; }
@media (max-width: 640px) { body { padding: 1rem .75rem 2rem; } h1 { font-size: 1.5rem; } }
h1 { margin: 0 0 .25rem; font-size: 1.8rem; }
h2 { margin: 2.2rem 0 .6rem; padding-bottom: .2rem; border-bottom: 2px solid var(--line); }
p.note, p.summary, details.note { color: var(--muted); margin: .3rem 0; }
details.note summary { cursor: pointer; color: var(--accent); }
nav { display: flex; flex-wrap: wrap; gap: .25rem 1rem; }
nav a, a { color: var(--accent); }
.table-wrap { overflow-x: auto; max-width: 100%; border: 1px solid var(--line); border-radius: 4px; }
table { border-collapse: separate; border-spacing: 0; width: 100%; font-size: 13px; }
th, td { padding: .3rem .45rem; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap;
         background: var(--bg); }
th { background: var(--head); font-weight: 600; white-space: normal; vertical-align: bottom; min-width: 4.5em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.wrap { white-space: normal; min-width: 10em; max-width: 16em; }
tr.pareto td { background: var(--pareto); }
td.pareto { color: #b7791f; text-align: center; }
td.status-verified { color: #1e7d32; font-weight: 600; }
td details pre { margin: .2rem 0; font-size: 12px; white-space: pre; }
td .seeds { display: block; color: var(--muted); font-size: 11px; }
.sticky { position: sticky; z-index: 1; }
th.sticky { z-index: 2; }
.sticky.s0 { left: 0; min-width: 3em; }
.sticky.s1 { left: var(--sticky-1, 3em); }
td.sticky.s1 { max-width: 10em; white-space: normal; overflow-wrap: anywhere; }
.sticky.s2 { left: var(--sticky-2, 9em); box-shadow: inset -2px 0 0 var(--line); }
th.js-sort { cursor: pointer; user-select: none; }
th.js-sort:hover, th.js-sort:focus { background: #e4e9ef; outline: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: .7em; }
th[aria-sort="descending"]::after { content: " \\25BC"; font-size: .7em; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 400px), 1fr)); gap: 1rem;
         margin-top: 1rem; align-items: start; }
figure { margin: 0; padding: .5rem; border: 1px solid var(--line); border-radius: 6px; min-width: 0; }
figcaption { color: var(--muted); font-size: 13px; margin-bottom: .25rem; }
svg.plot { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figure details { margin-top: .4rem; font-size: 13px; }
figure details summary { cursor: pointer; color: var(--accent); }
table.data { font-size: 12px; }
table.data td, table.data th { white-space: normal; min-width: 0; padding: .25rem .3rem; }
.problems { border: 1px solid #e0a800; background: var(--pareto); border-radius: 6px; padding: .5rem 1rem; }
.empty { font-size: 1.1rem; padding: 1rem; border: 1px dashed var(--line); border-radius: 6px; }
code { background: var(--head); padding: .05rem .3rem; border-radius: 3px; overflow-wrap: anywhere; }
""".strip()

# Sort a table by a clicked (or Enter-pressed) header: numbers (the cell's data-sort, else its
# text) compare as numbers, text naturally; a second click reverses. Hold the sticky columns at
# the measured widths of those before them, again on resize. Without JS the page is unchanged,
# in rank order, and the sticky columns use the CSS fallback offsets.
JS = """
(function () {
  function key(cell) {
    var v = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    var n = Number(v.replace(/,/g, ""));
    return v !== "" && !isNaN(n) ? { n: n } : { s: v };
  }
  function compare(a, b) {
    if ("n" in a && "n" in b) return a.n - b.n;
    if ("n" in a) return -1;
    if ("n" in b) return 1;
    return a.s.localeCompare(b.s, undefined, { numeric: true, sensitivity: "base" });
  }
  function stick(table) {
    var left = 0;
    table.querySelectorAll("thead th.sticky").forEach(function (th, i) {
      if (i > 0) table.style.setProperty("--sticky-" + i, left + "px");
      left += th.getBoundingClientRect().width;
    });
  }
  var tables = document.querySelectorAll("table.sortable");
  tables.forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.tabIndex = 0;
      th.classList.add("js-sort");
      th.title = "Sort by " + th.textContent.trim();
      function sort() {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows).map(function (row, i) {
          return { row: row, key: key(row.cells[col]), i: i };
        });
        rows.sort(function (x, y) { return (asc ? 1 : -1) * compare(x.key, y.key) || x.i - y.i; });
        rows.forEach(function (x) { body.appendChild(x.row); });
        stick(table);
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sort(); }
      });
    });
    stick(table);
  });
  function restick() { tables.forEach(stick); }
  window.addEventListener("resize", restick);
  document.addEventListener("toggle", restick, true);
})();
""".strip()
