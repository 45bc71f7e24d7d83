"""The executor's command-line flags, shared by ``ntkbench run`` and ``ntkbench study``:
``--executor local|ray``, ``--ray-address``, ``--ray-gpus-per-run``, ``--ray-cpus-per-run``."""

from __future__ import annotations

import argparse


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", default="local", choices=["local", "ray"],
                        help="local: the runs one after another in this process; ray: each run a task of a Ray "
                             "cluster (pip install 'ntkbench[ray]'), retried if its worker dies")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="the Ray cluster's address (ray start --head prints it; auto finds a local one); "
                             "default $RAY_ADDRESS, else the one ray start runs on this machine, else a new one")
    parser.add_argument("--ray-gpus-per-run", default=None, metavar="G",
                        help="GPUs each run asks for when it runs on CUDA: a fraction in (0, 1] shares a GPU, "
                             "or a whole number (default 1)")
    parser.add_argument("--ray-cpus-per-run", default=None, metavar="C",
                        help="CPUs each run asks for, also its torch threads (default 1)")


def executor_options(args: argparse.Namespace) -> dict[str, object]:
    """``executor``, ``ray_address`` and ``ray_options`` for :func:`ntkbench.runner.run` from the
    flags of :func:`add_executor_options`; a ``--ray-*`` flag without ``--executor ray``, or
    a value that is not a number, raises a one-line ValueError."""
    flags = {"--ray-address": args.ray_address, "--ray-gpus-per-run": args.ray_gpus_per_run,
             "--ray-cpus-per-run": args.ray_cpus_per_run}
    if args.executor != "ray":
        given = [flag for flag, value in flags.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} is for --executor ray; add --executor ray or leave it out")
        return {"executor": args.executor}
    from ntkbench.distributed.grid import RayOptions

    numbers = {}
    for flag, field in (("--ray-gpus-per-run", "gpus_per_run"), ("--ray-cpus-per-run", "cpus_per_run")):
        if flags[flag] is not None:
            try:
                numbers[field] = float(flags[flag])
            except ValueError:
                raise ValueError(f"{flag} {flags[flag]!r} is not a number; expected e.g. {flag} 0.5") from None
    return {"executor": "ray", "ray_address": args.ray_address, "ray_options": RayOptions(**numbers)}
