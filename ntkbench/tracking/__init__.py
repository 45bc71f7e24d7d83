"""Tracking: MLflow and the offline outbox, one module per concern. Only ``store`` and ``sync``
import MLflow, lazily, when a run logs to it or a journal is synced (the GPU machine's image
has no MLflow).

- ``environment``: where a run runs (device, versions, commit, host) and MLflow's source tags;
- ``journal``: a run's events as JSON lines, in memory or appended to a file of the outbox;
- ``live``: :class:`Tracker` and :class:`Run`, logging live and falling back to the outbox;
- ``store``: the MLflow client, writing events into runs, reading runs back (:func:`runs_frame`);
- ``sync``: importing the outbox's journals into a store (``ntkbench sync``).
"""

from ntkbench.tracking.environment import environment, environment_tags
from ntkbench.tracking.journal import RECORD_ID_TAG, resolve_outbox
from ntkbench.tracking.live import Run, Tracker
from ntkbench.tracking.store import resolve_uri, runs_frame
from ntkbench.tracking.sync import SyncResult, sync

__all__ = ["RECORD_ID_TAG", "Run", "SyncResult", "Tracker", "environment", "environment_tags", "resolve_outbox",
           "resolve_uri", "runs_frame", "sync"]
