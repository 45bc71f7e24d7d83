"""The study: does the kernel's feature space hold the target, and how do linearizations compare
with the trained network?

- :mod:`~ntkbench.study.grid`: :data:`STUDY_GRID` declares the runs (variants × label noise ×
  n_train × seeds, on the given task and on ``teacher``, whose labels a random network makes
  realizable), from what the methods declare: which method each linearizes, at which epoch.
- :mod:`~ntkbench.study.run`: :func:`run_study` runs them through :func:`ntkbench.runner.run`,
  every run tagged with the study, its id (``<task>-<UTC time>``) and its variant. The network
  runs first, and its test outputs are shared with the runs that linearize it, which log
  their linearization gap.
- :mod:`~ntkbench.study.load`: reads one study's runs back from MLflow as typed records (the
  latest study of the task unless given an id, so ordinary runs and earlier studies never mix).
- :mod:`~ntkbench.study.stats`: intervals (Wilson for accuracies, Newcombe for their
  differences, Student-t kept to the range for other means), correlations, paired differences;
  :mod:`~ntkbench.study.cells` writes them as table cells.
- :mod:`~ntkbench.study.findings`, :mod:`~ntkbench.study.sections`, :mod:`~ntkbench.study.plots`
  and :mod:`~ntkbench.study.report`: :func:`render_report` writes ``study-<task>.html`` and
  ``study-<task>.md``: the findings first (the two questions answered per task, from the data,
  saying where it cannot decide), then six questions answered with sentences, tables and plots.
- :mod:`~ntkbench.study.published`: for a study of several architectures (:data:`IMAGE_GRID`,
  ``make study TASK=mnist5k``), the published directions (Lee et al. 2020, Arora et al. 2019,
  Fort et al. 2020), each with "reproduced", "not reproduced" or "undecided at this size", kernel
  distance and target energy, and flips, each beside the section holding its numbers.

Every number in the report carries its 95% interval, and each table row lists the ids of the
runs it comes from.
"""

from ntkbench.study.findings import QUESTIONS, Finding, findings
from ntkbench.study.grid import (IMAGE_GRID, QUICK_GRID, STUDY_GRID, StudyArch, StudyGrid, Variant, display_order,
                                 make_grid, reference)
from ntkbench.study.report import render_report
from ntkbench.study.run import STUDY_ID_TAG, STUDY_TAG, VARIANT_TAG, run_study
from ntkbench.study.sections import SECTIONS
from ntkbench.study.stats import correlation, difference, interval, paired, proportion, wilson

__all__ = ["Variant", "StudyArch", "StudyGrid", "make_grid", "display_order", "reference", "STUDY_GRID", "QUICK_GRID",
           "IMAGE_GRID",
           "run_study", "render_report", "SECTIONS", "STUDY_TAG", "STUDY_ID_TAG", "VARIANT_TAG", "interval",
           "correlation", "paired", "proportion", "difference", "wilson", "findings", "Finding", "QUESTIONS"]
