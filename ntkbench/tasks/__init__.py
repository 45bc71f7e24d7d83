"""Classification tasks: real data shipped with dependencies and synthetic teacher tasks.

>>> from ntkbench import tasks
>>> task = tasks.get("digits", n_train=500, seed=1, label_noise=0.1)
>>> x, y = task.train          # float32 (500, 1, 8, 8), int64 in [0, 10)
>>> tasks.list_tasks()         # embedded data, files under the data root, synthetic

New tasks register a builder ``builder(common: Common, **options) -> Task`` with
``@register_task(name)``; ``from_arrays`` and ``finish`` do the shared preparation.
"""

from ntkbench.tasks.base import TASKS, Common, Task, from_arrays, finish, get, list_tasks, register_task
from ntkbench.tasks import embedded, imagenet, synthetic, torchvision  # noqa: F401  (importing registers the tasks)

__all__ = ["TASKS", "Common", "Task", "finish", "from_arrays", "get", "list_tasks", "register_task"]
