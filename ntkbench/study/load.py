"""Reading a study back: its FINISHED runs from MLflow, as typed records
(:func:`ntkbench.record.from_mlflow_row`), then one table row per run for the report.

A run without a fingerprint tag (not written by ntkbench's runner) is skipped. The table's
columns: ``task``, ``method``, ``variant`` (the run's :data:`VARIANT_TAG`), ``epoch`` (the epoch k a
linearization is taken at, 0 for other methods), ``n`` (n_train used), ``p`` (label noise),
``seed``, ``run_id``, ``n_test`` and ``n_fit`` (the test and training set sizes: the trials behind
the test and train accuracies), ``probe`` (the method's ``probe_size`` option, the inputs its
tangent kernel is tracked on; NaN for methods without it), the :data:`EVALUATION` and
:data:`METRICS` columns, and ``role``: the
study's linearized network (``reference``), a method that linearizes it (``linearization``) or
another method (``other``).

A study of several architectures (:data:`ARCH_TAG`) adds ``arch`` (the label), ``network``
(the registered architecture), ``readout`` (its ``readout`` option, ``""`` without one),
``size`` (the task option ``size``, 0 for the task's own input) and ``dataset`` (the task);
its ``task`` column is then ``<task> <label>``, so every section and finding reads one
architecture as it reads one task, in the order the study ran them. Every
study has ``flip`` (the run's training set holds each image and its mirror image), ``epochs``
(the run's training epochs, 0 for kernel methods) and ``n`` counts the images drawn before
mirroring.
"""

from __future__ import annotations

import math
from typing import Any

from ntkbench.methods import AT_EPOCH
from ntkbench.record import RunRecord, from_mlflow_row
from ntkbench.study.grid import display_order, reference, target
from ntkbench.study.run import ARCH_TAG, FLIP, LABEL_NOISE, SIZE, STUDY_ID_TAG, STUDY_TAG, VARIANT_TAG

PROBE = "probe_size"
"""The training option that sets how many training inputs the tangent kernel is tracked on."""

EVALUATION = {"test": "test_accuracy", "train": "train_accuracy", "fit": "time_fit_s", "total": "time_total_s",
              "peak": "peak_memory_mb"}
"""Column → :class:`ntkbench.record.Evaluation` field."""
METRICS = {"e1": "kernel_energy_top1", "e10": "kernel_energy_top10", "e100": "kernel_energy_top100",
           "kdist": "kernel_distance", "wdist": "weight_distance", "gap": "linearization_gap_rms",
           "agree": "linearization_label_agreement", "rate": "kernel_pairs_per_s"}
"""Column → metric a method reports (NaN in runs that do not report it)."""


def _row(record: RunRecord, variant: str, arch: Any) -> dict[str, Any]:
    config, evaluation = record.config, record.evaluation
    flip = bool(config.task_options.get(FLIP, False))
    label = {} if not isinstance(arch, str) else {
        "task": f"{record.task} {arch}", "dataset": record.task, "arch": arch, "network": config.arch,
        "readout": str(config.arch_options.get("readout", "")), "size": int(config.task_options.get(SIZE, 0))}
    return {"task": record.task, "method": record.method, "variant": variant,
            "epoch": int(config.method_options[AT_EPOCH]) if target(record.method) else 0,
            "epochs": int(config.method_options.get("epochs", 0)), "flip": flip,
            "n": int(config.task_options["n_original"]) if flip else record.n_train,
            "p": float(config.task_options[LABEL_NOISE]), "seed": record.seed, **label,
            "run_id": record.run_id, "n_test": int(config.task_options["n_test"]),
            "n_fit": int(config.task_options["n_train"]),
            "probe": float(config.method_options.get(PROBE, math.nan)),
            **{col: float(getattr(evaluation, name)) for col, name in EVALUATION.items()},
            **{col: float(record.metrics.get(name, math.nan)) for col, name in METRICS.items()}}


def load(task: str, uri: str | None, study_id: str | None = None):  # -> (pandas.DataFrame, str | None)
    """One row per FINISHED run of the study ``study_id`` (default: the latest of ``task``),
    sorted by task (``task`` first, then ``teacher``; the architectures of a study of several in
    the order they ran), variant, n_train, label noise, seed and run id; and the study id.
    ``n_max`` is each task's largest n_train without flips."""
    import pandas as pd

    from ntkbench.tracking import runs_frame

    frame = runs_frame(uri)
    tag = f"tags.{STUDY_ID_TAG}"
    if frame.empty or tag not in frame:
        return pd.DataFrame(), study_id
    frame = frame[frame[f"tags.{STUDY_TAG}"] == task]
    if study_id is None and frame[tag].notna().any():
        study_id = max(frame[tag].dropna())  # ids are <task>-<UTC time>: the latest sorts last
    rows = []
    runs = frame[frame[tag] == study_id].sort_values("start_time", kind="stable")
    for _, run in runs.iterrows():
        record = from_mlflow_row(run.to_dict())
        if record is not None and record.evaluation is not None:
            rows.append(_row(record, run[f"tags.{VARIANT_TAG}"], run.get(f"tags.{ARCH_TAG}")))
    if not rows:
        return pd.DataFrame(), study_id
    out = pd.DataFrame(rows)
    order, ref = display_order(out.method), reference(out.method)
    out["role"] = out.method.map(lambda m: "reference" if m == ref else
                                 "linearization" if ref is not None and target(m) == ref else "other")
    tasks = sorted(dict.fromkeys(out.task), key=lambda t: t.split(" ")[0] != task)  # run order, task first
    out["task_key"] = out.task.map(tasks.index)
    out["vkey"] = [(order.index(m), k, v) for m, k, v in zip(out.method, out.epoch, out.variant)]
    out["n_max"] = out.task.map(out[~out.flip].groupby("task").n.max())  # the sweep's, not the flips' n_train
    return out.sort_values(["task_key", "vkey", "n", "p", "seed", "run_id"]).reset_index(drop=True), study_id
