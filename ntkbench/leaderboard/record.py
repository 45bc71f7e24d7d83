"""One seed's result, the unit both leaderboard sources (MLflow runs, committed entries) give
and the generator aggregates."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    """The figures of one (task, method, arch, n_train, seed) run.

    ``source`` says where it came from: ``"mlflow:<run_id>"`` or ``"entry:<file name>"``.
    ``verified`` is true only for entries reproduced by the maintainers; MLflow runs made on
    this machine are shown as ``local``. ``finished_at`` is the run's end time (ISO 8601, UTC)
    or the entry's date; the page may show the latest one, never the time of rendering.
    """

    task: str
    method: str
    arch: str
    n_train: int
    seed: int
    test_accuracy: float
    time_fit_s: float
    time_predict_s: float
    time_total_s: float
    peak_memory_mb: float
    n_params: int
    device: str
    commit: str
    verified: bool
    source: str
    finished_at: str
