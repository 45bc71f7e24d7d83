"""The MLflow store: opening a client, writing journal events into runs, and reading runs back
as MLflow's pandas frame. MLflow is imported here (and in ``sync``) only, lazily.

The store is ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in
the working directory (MLflow 3's own default). One experiment per task.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ntkbench.tracking.journal import RECORD_ID_TAG
from ntkbench.tracking.schema import open_client

if TYPE_CHECKING:
    import pandas
    from mlflow import MlflowClient

DEFAULT_URI = "sqlite:///mlflow.db"


def resolve_uri(uri: str | None) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def client(uri: str, hint: str) -> MlflowClient:
    """An MLflow client of ``uri`` with its schema ready (``schema.open_client``). A missing
    MLflow is a ValueError that ends with ``hint`` (what else the user can do); a store that
    cannot be opened is a ``StoreUnavailable``, a half-migrated one a ``StoreBroken``."""
    try:
        import mlflow  # noqa: F401
    except ImportError as e:
        raise ValueError(f"MLflow cannot be imported ({e}); install it, {hint}") from None
    return open_client(uri)


def apply(client: MlflowClient, run_id: str | None, event: dict[str, Any]) -> str:
    """Log one event into the run ``run_id`` (a ``start`` creates it); returns the run's id."""
    kind = event["event"]
    if kind == "start":
        return create_run(client, event)
    if kind == "artifact":
        client.log_dict(run_id, event["data"], event["file_name"])
    elif kind == "end":
        client.set_terminated(run_id, event["status"], event["time"])
    else:
        log_batch(client, run_id, [event])
    return run_id


def create_run(client: MlflowClient, start: dict[str, Any]) -> str:
    tags = {**start["tags"], RECORD_ID_TAG: start["record_id"]}
    experiment_id = _experiment_id(client, start["experiment"])
    return client.create_run(experiment_id, start_time=start["time"], tags=tags, run_name=start["run_name"]).info.run_id


def _experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created if needed (another process may create it first)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def log_batch(client: MlflowClient, run_id: str, events: list[dict[str, Any]]) -> None:
    """The params, tags and metrics of ``events`` (metrics with their step and time), in
    batches within MLflow's limits (100 params or tags, 1000 metrics a call)."""
    from mlflow.entities import Metric, Param, RunTag

    params = {k: v for e in events if e["event"] == "params" for k, v in e["params"].items()}
    tags = {k: v for e in events if e["event"] == "tags" for k, v in e["tags"].items()}
    metrics = [Metric(k, v, e["time"], e["step"]) for e in events if e["event"] == "metrics"
               for k, v in e["values"].items()]
    batches = (("params", [Param(k, v) for k, v in params.items()], 100),
               ("tags", [RunTag(k, v) for k, v in tags.items()], 100), ("metrics", metrics, 1000))
    for field, items, size in batches:
        for i in range(0, len(items), size):
            client.log_batch(run_id, **{field: items[i:i + size]})


def runs_frame(uri: str | None, run_ids: list[str] | None = None) -> "pandas.DataFrame":
    """The runs of the store ``uri`` as MLflow's pandas frame (``run_id``, ``status``,
    ``end_time``, ``params.*``, ``metrics.*``, ``tags.*``), across all experiments.

    Without ``run_ids``: every FINISHED run. With ``run_ids``: exactly those runs, whatever their
    status, in no particular order; an id that names no run raises a ``ValueError`` naming it.
    A local store that does not exist yet (an SQLite file, a folder) is read as empty and is
    not created.
    """
    import pandas as pd

    resolved = resolve_uri(uri)
    missing = missing_local_store(resolved)
    if missing and not run_ids:
        return pd.DataFrame()
    if missing:
        raise ValueError(f"no such run(s) {', '.join(run_ids)}: the store {resolved} does not exist")
    if run_ids is None:
        frame = _search(resolved, "attributes.status = 'FINISHED'")
    else:
        bad = [r for r in run_ids if not r or not all(c.isalnum() or c in "-_" for c in r)]
        wanted = [r for r in dict.fromkeys(run_ids) if r not in bad]
        chunks = [wanted[i:i + 100] for i in range(0, len(wanted), 100)]
        frames = [_search(resolved, "attributes.run_id IN (" + ", ".join(f"'{r}'" for r in chunk) + ")")
                  for chunk in chunks]
        frames = [f for f in frames if len(f)]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id"])
        unknown = bad + [r for r in wanted if r not in set(frame["run_id"])]
        if unknown:
            raise ValueError(f"no such run(s) in {resolved}: {', '.join(map(repr, unknown))}")
    return frame.reset_index(drop=True)


def _search(uri: str, filter_string: str):
    """``mlflow.search_runs`` on ``uri``; MLflow's global tracking URI and the
    ``MLFLOW_TRACKING_URI`` variable are left as they were."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    old_global, old_env = getattr(utils, "_tracking_uri", None), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.search_runs(search_all_experiments=True, output_format="pandas", filter_string=filter_string)
    finally:
        mlflow.set_tracking_uri(old_global)
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env


def missing_local_store(uri: str) -> bool:
    """True for an SQLite file or a local folder store that does not exist."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):].split("?", 1)[0]
        return path not in ("", ":memory:") and not Path(path).exists()
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        return not Path(unquote(urlparse(uri).path)).exists()
    if "://" not in uri and uri not in ("databricks",):
        return not Path(uri).exists()
    return False
