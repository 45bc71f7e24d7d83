"""Ray, the optional engine that runs grids and kernel tiles on every device of a cluster
(``pip install 'ntkbench[ray]'``): ``connect`` starts or joins a cluster, with one clear error
where Ray is missing or the address does not answer."""

from __future__ import annotations

from types import ModuleType

EXECUTORS = ("local", "ray")


def require_ray() -> ModuleType:
    """The ``ray`` module, or a one-line ValueError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray, which is not installed; pip install 'ntkbench[ray]'") from None
    return ray


def connect(address: str | None = None, **init_options) -> ModuleType:
    """Ray, connected: to the cluster at ``address`` (``ray start --head`` prints it; "auto"
    finds a local one), or to a new local one when None; an existing connection is kept."""
    ray = require_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, **init_options)
        except ConnectionError as e:
            raise ValueError(f"no Ray cluster answers at {address!r} ({e}); start one with `ray start --head` "
                             "and pass the address it prints") from None
    return ray
