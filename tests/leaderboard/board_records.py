"""Typed run records with chosen figures, as the runner writes them, for the leaderboard tests
that need setups one machine cannot run (other device classes, reruns at chosen times)."""

from __future__ import annotations

import hashlib
from typing import Any

from ntkbench.leaderboard.ranking import LOCAL, Result
from ntkbench.record import Config, Environment, Evaluation, RunRecord

DEVICE = "AMD EPYC 7B13"
COMMIT = "0123456789abcdef" * 2 + "01234567"


def make_record(task: str = "digits", method: str = "nn", arch: str = "mlp", seed: int = 0, acc: float = 0.9,
                total: float = 1.0, *, n_train: int = 100, arch_options: dict[str, Any] | None = None,
                method_options: dict[str, Any] | None = None, task_options: dict[str, Any] | None = None,
                device_name: str = DEVICE, commit: str = COMMIT, run_id: str | None = None,
                finished_at: str = "2026-12-01T00:00:00.000+00:00", peak: float = 100.0,
                n_params: int = 1000) -> RunRecord:
    config = Config(task, method, arch, {"n_train": n_train, "label_noise": 0.0, **(task_options or {})},
                    method_options if method_options is not None else {"lr": 0.1},
                    arch_options if arch_options is not None else {"depth": 2, "width": 256})
    evaluation = Evaluation(test_accuracy=acc, test_mse=1 - acc, train_accuracy=1.0, time_fit_s=0.8 * total,
                            time_predict_s=0.2 * total, time_total_s=total, time_train_eval_s=0.1 * total,
                            peak_memory_mb=peak, process_peak_memory_mb=peak + 900, n_params=n_params)
    environment = Environment("cpu", device_name, "2.14.1", "0.1.0", "host", commit)
    run_id = run_id or hashlib.sha256(f"{config.fingerprint} {seed} {device_name} {finished_at}".encode()).hexdigest()[:32]
    return RunRecord(config, seed, n_train, "FINISHED", environment, evaluation, run_id=run_id,
                     finished_at=finished_at)


def local(*records: RunRecord) -> list[Result]:
    return [Result(r, LOCAL) for r in records]
