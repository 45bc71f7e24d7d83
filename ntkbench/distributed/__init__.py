"""Ray, the optional engine that runs grids and kernel tiles on every device of a cluster
(``pip install 'ntkbench[ray]'``): ``connect`` starts or joins a cluster, with one clear error
where Ray is missing or the address does not answer."""

from __future__ import annotations

import os
import socket
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
        _probe(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, **init_options)
        except ConnectionError as e:
            auth = ("; a cluster with token authentication (what `ray start` turns on where ~/.ray/auth_token "
                    "exists) also needs RAY_AUTH_MODE=token here" if address not in (None, "auto")
                    and "RAY_AUTH_MODE" not in os.environ else "")
            raise ValueError(f"no Ray cluster answers at {address!r} ({e}); start one with `ray start --head` "
                             f"and pass the address it prints{auth}") from None
    return ray


def _probe(address: str | None) -> None:
    """A ``host:port`` (or ``ray://host:port``) address that accepts no TCP connection within
    ``$NTKBENCH_CONNECT_TIMEOUT`` seconds (default 5) is a one-line ValueError: Ray itself would
    retry for minutes. Other addresses (None, "auto", "local") are left to Ray."""
    from ntkbench.tracking.schema import connect_timeout

    host, _, port = (address or "").split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return
    timeout = connect_timeout()
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ValueError(f"no Ray cluster answers at {address!r} within {timeout:g} s ({e.strerror or e}); start one "
                         "with `ray start --head` and pass the address it prints") from None
