"""A method plugin for the distributed tests: nearest class mean, whose first attempt kills its
own process mid-run. The marker file (option ``marker``) tells the attempts apart: the first
finds none, writes it and SIGKILLs itself inside ``fit``, after its MLflow run has started."""

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Means:
    means: torch.Tensor

    def predict(self, x):
        return -torch.cdist(x.flatten(1), self.means).square()


@dataclass
class CrashOnce:
    arch: object
    seed: int = 0
    marker: str = ""

    def fit(self, x, labels, num_classes, ctx=None):
        if not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return Means(torch.stack([x[labels == c].flatten(1).mean(0) for c in range(num_classes)]))
