"""``ntkbench ui``: the MLflow UI opened on a task's runs, with useful columns.

What MLflow 3's UI does (read from the UI bundle of mlflow 3.17, ``mlflow/server/js/build``):

- It routes with a hash router: an experiment's runs are at ``<server>/#/experiments/<id>/runs``
  (MLflow's own Python code prints ``#/experiments/<id>`` links too).
- It has two workflows, GenAI and machine learning. The workflow is the URL's ``workflowType``
  parameter, else the one last chosen in this browser (local storage ``mlflow.workflowType``),
  else GenAI, whose home page and experiment tabs (traces, evaluations) are not ours:
  ``workflowType=machine_learning`` opens the classic runs table.
- The runs table shows no metric or parameter column by default (only Source, Models and
  Dataset). A view can be shared: an experiment tag ``mlflow.sharedViewState.<key>`` holding a
  JSON view state (``selectedColumns`` such as ``metrics.`test_accuracy```, ``orderByKey``,
  ``orderByAsc``) is applied by the URL parameter ``viewStateShareKey=<key>``.

So :func:`install_view` writes the view :data:`VIEW` under the key :data:`VIEW_KEY` on every
experiment of the store, and :func:`experiment_url` links to it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from ntkbench import signals
from ntkbench.tracking import store

if TYPE_CHECKING:
    from mlflow import MlflowClient

VIEW_KEY = "ntkbench"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
COLUMNS = [f"params.`{p}`" for p in ("method", "arch", "n_train", "seed", "device")] + [
    f"metrics.`{m}`" for m in ("test_accuracy", "train_accuracy", "time_fit_s", "time_total_s", "peak_memory_mb")]
"""The runs table's columns: what the leaderboard ranks by, and what tells the runs apart."""
VIEW = {"selectedColumns": ["attributes.`Source`", *COLUMNS], "orderByKey": "metrics.`test_accuracy`",
        "orderByAsc": False}
"""The shared view state: the columns above, the best test accuracy first."""


def experiment_url(base: str, experiment_id: str | None) -> str:
    """The runs table of experiment ``experiment_id`` in the machine-learning workflow with the
    :data:`VIEW` (the experiments list if None), on the server at ``base``."""
    query = urlencode({"workflowType": "machine_learning", **({"viewStateShareKey": VIEW_KEY} if experiment_id else {})})
    path = f"experiments/{experiment_id}/runs" if experiment_id else "experiments"
    return f"{base.rstrip('/')}/#/{path}?{query}"


def install_view(client: MlflowClient) -> None:
    """Tag every active experiment of the store with :data:`VIEW` (an existing tag is replaced)."""
    value = json.dumps(VIEW, separators=(",", ":"))
    for experiment in client.search_experiments():
        if experiment.tags.get(VIEW_TAG) != value:
            client.set_experiment_tag(experiment.experiment_id, VIEW_TAG, value)


def experiment_id(client: MlflowClient, task: str) -> str | None:
    experiment = client.get_experiment_by_name(task)
    return experiment.experiment_id if experiment is not None else None


def can_open_browser() -> bool:
    """A browser can be shown: macOS or Windows, or a Linux/BSD session with a display."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def wait_healthy(base: str, process: subprocess.Popen | None, deadline_s: float) -> None:
    """Return once ``base``/health answers 200; raise ValueError if ``process`` exits first or
    ``deadline_s`` passes (an MLflow server takes ~20 s to answer on loaded cores)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        signals.check()
        if process is not None and process.poll() is not None:
            raise ValueError(f"the MLflow server exited with status {process.returncode} before answering at {base}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise ValueError(f"the MLflow server did not answer at {base}/health within {deadline_s:.0f} s")


def serve(uri: str | None, task: str, host: str, port: int, browser: bool, deadline_s: float = 180) -> int:
    """Serve the store ``uri`` (default :func:`store.resolve_uri`) with ``mlflow server`` on
    ``host:port`` until interrupted, its output in a log file; once it answers, print the URL of
    ``task``'s runs (:func:`experiment_url`) and the log's path, and open the URL in a browser if
    ``browser`` and :func:`can_open_browser`.
    A store that is already a server (``http(s)://``) is not served again: its URL is printed.
    Returns the exit status; bad input or a server that does not come up raise ValueError."""
    uri = store.resolve_uri(uri)
    client = store.client(uri, "or open the UI of a store that has it")
    install_view(client)
    found = experiment_id(client, task)
    remote = uri.startswith(("http://", "https://"))
    base = uri.rstrip("/") if remote else f"http://{host}:{port}"
    process, log = None, None
    if not remote:
        log = tempfile.NamedTemporaryFile("w+", prefix="ntkbench-ui-", suffix=".log", delete=False)
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        wait_healthy(base, process, deadline_s)
        url = experiment_url(base, found)
        if found is None:
            print(f"ntkbench: no runs of task {task!r} in {uri} yet; the link opens the experiments list", file=sys.stderr)
        print(f"MLflow UI: {url}" + (f"  (server log: {log.name}; Ctrl-C stops it)" if log else ""), flush=True)
        if browser and can_open_browser():
            import webbrowser

            webbrowser.open(url)
        while process is not None and process.poll() is None:
            signals.check()
            time.sleep(0.5)
        return 0 if process is None else process.returncode
    except ValueError as e:
        if log is not None and process is not None and process.poll() is not None:
            log.seek(0)
            lines = [line.strip() for line in log.read().splitlines() if line.strip()]
            if lines:
                raise ValueError(f"{e}: {lines[-1]} (log: {log.name})") from None
        raise
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
