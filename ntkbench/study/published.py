"""A study of several architectures against the published directions: each statement is drawn
from a table of this module's sections and placed beside the paper it should reproduce, with
the verdict "reproduced", "not reproduced" or "undecided at this size".

- **Networks against their kernels** (Lee et al. 2020, "Finite versus infinite neural networks:
  an empirical study": the trained CNN above its NTK and NNGP). Per architecture, at the
  largest n_train: reproduced when every kernel's accuracy minus the network's has an interval
  below 0, not reproduced when one is above 0, undecided otherwise. Where the learning curves
  cross is read from the sign of the mean differences over the n_train sweep.
- **GAP against Flatten** (Arora et al. 2019, "On exact computation with an infinitely wide
  neural net": CNTK-GAP above CNTK-V). For each network with a GAP and a Flatten readout in the
  study, preferably at the same input size: for the kernels, reproduced when every kernel's
  GAP − Flatten interval is above 0, not reproduced when every one is below, undecided
  otherwise; for the trained networks the same from the network's own difference.
- **Linearizing later** (Fort et al. 2020, "Deep learning versus kernel learning": a kernel
  taken after 15–45% of training nearly matches the network). Per architecture and
  linearization, at its latest epoch k against its first (0 in the study): reproduced when it
  is below the network at the first epoch (an interval below 0), no longer below it at k (the
  interval is not below 0) and better at k than at the first epoch (an interval above 0); not
  reproduced when it is still below the network at k; undecided otherwise.
- **Kernel distance and target energy**: whether the network's advantage over its NTK grows
  with how far its tangent kernel moved (Pearson's r over architectures × seeds), and whether
  the top-10 target energy of the eNTK grows from epoch 0 to k (Baratin et al. 2021, "Implicit
  regularization via neural feature alignment"; a t-interval over the per-seed differences).
- **Flip augmentation**: each variant with the task option ``flip`` (each training image and its
  mirror image) against the same draw without it; whether the ranking of the variants by test
  accuracy changes, and whether each swap is decided (both orders' differences exclude 0). This
  one has no published direction to reproduce on digits, so it carries no verdict word.

All differences of accuracies are Newcombe intervals of pooled test predictions, read from the
table cell as printed (:func:`ntkbench.study.cells.bounds`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ntkbench import format as fmt
from ntkbench.study import cells
from ntkbench.study.findings import listing
from ntkbench.study.sections import Section, Table, run_ids

REPRODUCED, NOT_REPRODUCED, UNDECIDED = "reproduced", "not reproduced", "undecided at this size"
LEE = ("Lee et al. 2020", "Finite versus infinite neural networks", "kernels below the trained CNN")
ARORA = ("Arora et al. 2019", "On exact computation with an infinitely wide neural net", "GAP above Flatten")
FORT = ("Fort et al. 2020", "Deep learning versus kernel learning",
        "a kernel taken after 15–45% of training closes the gap to the network")
EXPLAIN = ("Fort et al. 2020; Baratin et al. 2021", "Implicit regularization via neural feature alignment",
           "the kernel moves and aligns with the target as the network trains")
FLIP = ("Lee et al. 2020", "Finite versus infinite neural networks", "flip augmentation shared by all methods")
HEADINGS = ("Networks against their kernels", "GAP against Flatten", "Linearizing later",
            "Kernel distance and target energy", "Flip augmentation")
KERNELS, GAP_FLATTEN, LATER, EXPLAINS, FLIPS = HEADINGS


@dataclass(frozen=True)
class Direction:
    """A published direction, ``paper`` (authors, year and title) saying ``claim``, and what
    this study found: ``text`` with its verdicts, whose numbers are in the section ``link``."""

    paper: str
    claim: str
    text: str
    link: str


def _bounds(cell: str) -> tuple[float, float]:
    return cells.bounds(cell) or (math.nan, math.nan)


def _verdict(cell: str) -> int:
    """+1 when the cell's interval is above 0, −1 below, 0 when it holds 0 or is missing."""
    lo, hi = _bounds(cell)
    return 1 if lo > 0 else -1 if hi < 0 else 0


def _said(items: list[tuple[str, str]]) -> str:
    """Each statement with its verdict: ``cnn-gap-7 at n_train 200: … — reproduced; …``."""
    return "; ".join(f"{item} — {word}" for item, word in items)


def _arch(frame: Any, label: str) -> str:
    return frame[frame.task == label].arch.iloc[0]


def _kernels(clean: Any) -> tuple[Section, Direction]:
    nets = clean[clean.role == "reference"]
    kernel_variants = list(dict.fromkeys(clean[clean.role == "other"].variant))
    ref = next(iter(nets.method), "nn")
    rows, verdicts, crossings = [], [], []
    for t in dict.fromkeys(nets.task):
        tg = clean[clean.task == t]
        diffs: dict[str, list[tuple[int, str]]] = {v: [] for v in kernel_variants}
        for n in sorted(tg[tg.role == "reference"].n.unique()):
            nn = tg[(tg.n == n) & (tg.role == "reference")]
            row = [_arch(clean, t), fmt.integer(n), cells.accuracy(nn)]
            for v in kernel_variants:
                g = tg[(tg.n == n) & (tg.variant == v)]
                cell = cells.points(g, nn)
                diffs[v].append((n, cell))
                row += [cells.accuracy(g), cell]
            at = tg[tg.n == n]
            kern = at[at.variant.isin(kernel_variants)]
            rows.append(row + [cells.mean(kern.rate.dropna(), (0.0, math.inf), lambda x: fmt.significant(x, trim=True)),
                               run_ids(at[at.variant.isin([ref, *kernel_variants])])])
        last = [cell for v in kernel_variants for _, cell in diffs[v][-1:]]
        signs = [_verdict(c) for c in last]
        word = REPRODUCED if signs and all(s < 0 for s in signs) else NOT_REPRODUCED if any(s > 0 for s in signs) \
            else UNDECIDED
        verdicts.append((f"{_arch(clean, t)} at n_train {fmt.integer(nets[nets.task == t].n.max())}: "
                         + ", ".join(f"{v} − {ref} {cell} points" for v, cell in zip(kernel_variants, last)), word))
        for v in kernel_variants:
            crossings.append(f"{v} and {ref} on {_arch(clean, t)} {_crossing(diffs[v])}")
    columns = ["architecture", "n_train", f"{ref} test accuracy, %"]
    for v in kernel_variants:
        columns += [f"{v} test accuracy, %", f"{v} − {ref}, points"]
    section = Section(KERNELS, "Is the trained network more accurate than its infinite-width NTK and NNGP, at "
                      "every n_train, and where do the learning curves cross?", None, [],
                      [Table([*columns, "kernel pairs/s", "runs"], rows)],
                      "Label noise 0, no flips. Differences are Newcombe intervals of the pooled test predictions. "
                      "Kernel pairs/s is the train kernel's measured throughput (n(n+1)/2 pairs over its time, logged "
                      "as kernel_pairs_per_s by the run that computed it; the other kernel of the pair reads the cache).")
    text = (f"Kernel minus trained network at the largest n_train: {_said(verdicts)}. "
            f"Learning curves (mean accuracies): {'; '.join(crossings)}.")
    return section, Direction(f"{LEE[0]}, \"{LEE[1]}\"", LEE[2], text, KERNELS)


def _crossing(diffs: list[tuple[int, str]]) -> str:
    """Where the mean of a difference changes sign over the sweep, from its cells."""
    means = [(n, float(cell.split(" ")[0].replace("−", "-").replace("+", ""))) for n, cell in diffs
             if cell != fmt.MISSING]
    if len(means) < 2:
        return "have one n_train, so no crossing can be read"
    cross = [f"between n_train {fmt.integer(a)} and {fmt.integer(b)}" for (a, x), (b, y) in zip(means, means[1:])
             if (x < 0) != (y < 0)]
    if cross:
        return "cross " + " and ".join(cross)
    side = "below" if means[0][1] < 0 else "above"
    return f"do not cross from n_train {fmt.integer(means[0][0])} to {fmt.integer(means[-1][0])} (the kernel stays {side})"


def _pairs(clean: Any) -> list[tuple[str, str]]:
    """(GAP label, Flatten label) for each network the study has with both readouts, preferring
    the same input size."""
    archs = clean.drop_duplicates("arch")
    out = []
    for network, g in archs.groupby("network", sort=False):
        gaps, flats = g[g.readout == "gap"], g[g.readout == "flatten"]
        if gaps.empty or flats.empty:
            continue
        gap = gaps.iloc[0]
        same = flats[flats["size"] == gap["size"]]
        out.append((gap.task, (same if not same.empty else flats).iloc[0].task))
    return out


def _size(clean: Any, t: str) -> str:
    s = int(clean[clean.task == t]["size"].iloc[0])
    return f"{s}×{s}" if s else "full size"


def _gap_flatten(clean: Any) -> tuple[Section, Direction]:
    rows, kernel_words, net_words = [], [], []
    ref = next(iter(clean[clean.role == "reference"].method), "nn")
    kernel_variants = list(dict.fromkeys(clean[clean.role == "other"].variant))
    for gap, flat in _pairs(clean):
        n = min(clean[clean.task == gap].n.max(), clean[clean.task == flat].n.max())
        cellmap = {}
        for v in dict.fromkeys(clean[clean.task == gap].variant):
            a = clean[(clean.task == gap) & (clean.n == n) & (clean.variant == v)]
            b = clean[(clean.task == flat) & (clean.n == n) & (clean.variant == v)]
            if a.empty or b.empty:
                continue
            cellmap[v] = cells.points(a, b)
            rows.append([_arch(clean, gap), _arch(clean, flat), v, fmt.integer(n), cells.accuracy(a), cells.accuracy(b),
                         cellmap[v], run_ids(a) + " " + run_ids(b)])
        label = (f"{_arch(clean, gap)} ({_size(clean, gap)}) against {_arch(clean, flat)} ({_size(clean, flat)}) "
                 f"at n_train {fmt.integer(n)}")
        present = [v for v in kernel_variants if v in cellmap]
        ks = [cellmap[v] for v in present]
        signs = [_verdict(c) for c in ks]
        word = REPRODUCED if signs and all(s > 0 for s in signs) else NOT_REPRODUCED if signs and all(s < 0 for s in signs) \
            else UNDECIDED
        kernel_words.append((f"{label}: " + ", ".join(f"{v} {c} points" for v, c in zip(present, ks)), word))
        if ref in cellmap:
            sign = _verdict(cellmap[ref])
            net_words.append((f"{label}: {ref} {cellmap[ref]} points",
                              REPRODUCED if sign > 0 else NOT_REPRODUCED if sign < 0 else UNDECIDED))
    section = Section(GAP_FLATTEN, "Does a global-average-pooling readout beat a Flatten readout, for the kernels "
                      "and for the trained networks?", None, [],
                      [Table(["GAP", "Flatten", "variant", "n_train", "GAP test accuracy, %", "Flatten test accuracy, %",
                              "GAP − Flatten, points", "runs"], rows)],
                      "Label noise 0, no flips, the largest n_train both architectures ran. Each pair compares one "
                      "network with its two readouts, at the same input size where the study has it.")
    if not rows:
        text = "The study has no network with both a GAP and a Flatten readout."
    else:
        text = f"Kernels, GAP − Flatten: {_said(kernel_words)}. Trained networks: {_said(net_words)}."
    return section, Direction(f"{ARORA[0]}, \"{ARORA[1]}\"", ARORA[2], text, GAP_FLATTEN)


def _later(clean: Any) -> tuple[Section, Direction]:
    rows, words = [], []
    nets = clean[clean.role == "reference"]
    ref = next(iter(nets.method), "nn")
    for t in dict.fromkeys(nets.task):
        tg = clean[(clean.task == t) & (clean.n == nets[nets.task == t].n.max())]
        nn = tg[tg.role == "reference"]
        epochs = int(nn.epochs.max())
        for m in dict.fromkeys(tg[tg.role == "linearization"].method):
            mg = tg[tg.method == m]
            ks = sorted(mg.epoch.unique())
            first = mg[mg.epoch == ks[0]]
            for k in ks:
                g = mg[mg.epoch == k]
                closed = fmt.MISSING
                gap0 = nn.test.mean() - first.test.mean()
                if k != ks[0] and gap0 > 0:
                    closed = fmt.percent((g.test.mean() - first.test.mean()) / gap0, 0)
                rows.append([_arch(clean, t), g.variant.iloc[0], str(k), fmt.percent(k / epochs, 0) if epochs else fmt.MISSING,
                             cells.accuracy(g), cells.points(g, nn), cells.points(g, first) if k != ks[0] else fmt.MISSING,
                             closed, run_ids(g)])
            last = mg[mg.epoch == ks[-1]]
            d0, dk, gain = cells.points(first, nn), cells.points(last, nn), cells.points(last, first)
            if _verdict(dk) < 0:
                word = NOT_REPRODUCED
            elif _verdict(d0) < 0 and _verdict(gain) > 0:
                word = REPRODUCED
            else:
                word = UNDECIDED
            words.append((f"{last.variant.iloc[0]} on {_arch(clean, t)}: {d0} points from {ref} at epoch {ks[0]}, "
                          f"{dk} at epoch {ks[-1]} of {epochs}, a change of {gain}", word))
    section = Section(LATER, f"As the epoch k a linearization is taken at grows, how much of the gap to {ref} "
                      "does it close?", None, [],
                      [Table(["architecture", "variant", "k", "% of training", "test accuracy, %",
                              f"− {ref}'s, points", "− at the first k, points", "share of the gap closed, %", "runs"], rows)],
                      "Label noise 0, no flips, the largest n_train. The share of the gap closed is (acc_k − acc_0) / "
                      f"({ref} − acc_0) of the mean accuracies, a point estimate, shown where there was a gap at 0.")
    text = f"The latest linearization against {ref}, at the largest n_train: {_said(words)}."
    return section, Direction(f"{FORT[0]}, \"{FORT[1]}\"", FORT[2], text, LATER)


def _explains(clean: Any) -> tuple[Section, Direction]:
    top = clean[clean.n == clean.groupby("task").n.transform("max")]
    nets = top[top.role == "reference"]
    ref = next(iter(nets.method), "nn")
    others = top[top.role == "other"]
    kernel = next(iter(others[others.method == "ntk"].variant), next(iter(others.variant), None))
    rows, xs, ys, gains = [], [], [], []
    for t in dict.fromkeys(nets.task):
        tg = top[top.task == t]
        nn = tg[tg.role == "reference"]
        rows.append([_arch(clean, t), ref, cells.mean(nn.kdist, (0.0, math.inf)), fmt.MISSING, cells.accuracy(nn), run_ids(nn)])
        for v in dict.fromkeys(tg[tg.e10.notna()].variant):
            g = tg[tg.variant == v]
            rows.append([_arch(clean, t), v, fmt.MISSING, cells.fraction(g.e10), cells.accuracy(g), run_ids(g)])
        if kernel is not None:
            kern = tg[tg.variant == kernel].set_index("seed")
            for _, run in nn.iterrows():
                if run.seed in kern.index and math.isfinite(run.kdist):
                    xs.append(run.kdist)
                    ys.append(run.test - kern.loc[run.seed].test)
        entk = tg[tg.e10.notna() & (tg.role == "linearization")]
        if not entk.empty:
            k0, k1 = entk.epoch.min(), entk.epoch.max()
            a, b = entk[entk.epoch == k1].set_index("seed").e10, entk[entk.epoch == k0].set_index("seed").e10
            gains += [float(a[s] - b[s]) for s in sorted(set(a.index) & set(b.index))] if k1 > k0 else []
    r_cell = cells.r(xs, ys)
    gain_cell = cells.mean(gains, (-1.0, 1.0))
    kernel = kernel or "the kernel"
    r_rows = [[f"{ref}'s kernel distance against {ref} − {kernel} accuracy (per architecture and seed)", str(len(xs)), r_cell],
              ["top-10 target energy of the latest linearization's kernel minus at its first epoch (per seed)",
               str(len(gains)), gain_cell]]
    section = Section(EXPLAINS, f"Does {ref}'s advantage over its kernel grow with how far its tangent kernel moves, "
                      "and does the tangent kernel's top-10 target energy grow as it trains?", None, [],
                      [Table(["architecture", "variant", "kernel distance", "energy top 10", "test accuracy, %", "runs"], rows),
                       Table(["statistic", "values", "estimate"], r_rows)],
                      "Label noise 0, no flips, the largest n_train. r is Pearson's with Fisher's z interval; the energy "
                      "difference a Student-t interval over the per-seed differences.")
    distance = {1: REPRODUCED, -1: NOT_REPRODUCED, 0: UNDECIDED}[_verdict(r_cell)]
    energy = {1: REPRODUCED, -1: NOT_REPRODUCED, 0: UNDECIDED}[_verdict(gain_cell)]
    text = (f"Across {len(xs)} architecture × seed pairs, the correlation of {ref}'s kernel distance with its "
            f"advantage over {kernel} is r = {r_cell} — {distance}. The top-10 target energy of the tangent kernel "
            f"changes by {gain_cell} from the first to the latest linearization epoch ({len(gains)} seeds and "
            f"architectures) — {energy}.")
    return section, Direction(f"{EXPLAIN[0]}, \"{EXPLAIN[1]}\"", EXPLAIN[2], text, EXPLAINS)


def _flips(frame: Any) -> tuple[Section, Direction] | None:
    flipped = frame[frame.flip]
    if flipped.empty:
        return None
    rows, said = [], []
    for t in dict.fromkeys(flipped.task):
        fg = flipped[flipped.task == t]
        n = fg.n.max()
        fg = fg[fg.n == n]
        base = frame[(frame.task == t) & ~frame.flip & (frame.n == n) & (frame.p == fg.p.min())]
        variants = [v for v in dict.fromkeys(fg.variant) if (base.variant == v).any()]
        if not variants:
            said.append(f"{_arch(frame, t)} at n_train {fmt.integer(n)}: no run without flips to compare with")
            continue
        before, after = _ranking(base, variants), _ranking(fg, variants)
        for v in variants:
            a, b = fg[fg.variant == v], base[base.variant == v]
            rows.append([_arch(frame, t), v, fmt.integer(n), cells.accuracy(b), cells.accuracy(a), cells.points(a, b),
                         str(before.index(v) + 1), str(after.index(v) + 1), run_ids(b) + " " + run_ids(a)])
        swaps = []
        for i, u in enumerate(before):
            for w in before[i + 1:]:
                if after.index(u) > after.index(w):
                    was = _verdict(cells.points(base[base.variant == u], base[base.variant == w]))
                    now = _verdict(cells.points(fg[fg.variant == w], fg[fg.variant == u]))
                    swaps.append(f"{u} and {w} ({'decided' if was > 0 and now > 0 else 'within the intervals'})")
        helps = [v for v in variants if _verdict(cells.points(fg[fg.variant == v], base[base.variant == v])) > 0]
        hurts = [v for v in variants if _verdict(cells.points(fg[fg.variant == v], base[base.variant == v])) < 0]
        text = f"{_arch(frame, t)} at n_train {fmt.integer(n)}: " + (
            f"the ranking changes, swapping {listing(swaps)}" if swaps else "the ranking does not change")
        text += (f"; flips raise the accuracy of {listing(helps)}" if helps else "") + (
            f"; flips lower the accuracy of {listing(hurts)}" if hurts else "")
        said.append(text)
    section = Section(FLIPS, "Does adding each training image's mirror image change the ranking of the methods?",
                      None, [], [Table(["architecture", "variant", "n_train", "test accuracy without flips, %",
                                        "with flips, %", "flips − without, points", "rank without", "rank with",
                                        "runs"], rows)],
                      "n_train counts the images drawn; with flips every method trains on them and their mirror "
                      "images (twice as many points). Ranks order the variants by pooled test accuracy. A swap is "
                      "decided when both orders' differences have intervals excluding 0.")
    text = ("; ".join(said) + ". MNIST digits are not mirror-symmetric, so a flipped image is a new shape with its "
            "old label: the direction to expect is lower accuracy, not the gain flips give on natural images.")
    return section, Direction(f"{FLIP[0]}, \"{FLIP[1]}\"", FLIP[2], text, FLIPS)


def _ranking(runs: Any, variants: list[str]) -> list[str]:
    """``variants`` from the highest pooled test accuracy in ``runs`` to the lowest (ties in
    their given order)."""
    acc = {v: cells.accuracy_bounds(runs[runs.variant == v])[0] for v in variants}
    return sorted(variants, key=lambda v: (-acc[v], variants.index(v)))


def published(frame: Any) -> tuple[list[Direction], list[Section]]:
    """The directions and their sections for the study table ``frame`` of a study of several
    architectures (:func:`ntkbench.study.load.load`, with the ``arch`` column)."""
    clean = frame[~frame.flip & (frame.p == frame.p.min())]
    parts = [_kernels(clean), _gap_flatten(clean), _later(clean), _explains(clean), _flips(frame)]
    found = [p for p in parts if p is not None]
    return [d for _, d in found], [s for s, _ in found]

