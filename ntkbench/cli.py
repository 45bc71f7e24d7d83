"""A thin command line over the Python API (``ntkbench.run``).

    ntkbench run --task digits --method all --arch mlp --seeds 0,1,2 [--set nn.lr=0.1 ...]
    ntkbench list tasks|methods|archs
    ntkbench leaderboard | export RUN_ID... | validate PATH
    ntkbench study --task T [--arch A] [--quick] | report --task T [--study-id ID]
    ntkbench run|study ... --tracking offline [--outbox DIR]; later: ntkbench sync [--outbox DIR] [--lease S]
    ntkbench store repair [--tracking-uri URI]
    ntkbench server start|stop|status [--dir DIR] [--port P]   (PostgreSQL + mlflow server for a team)
    ntkbench ui [--task T]
    ntkbench plan --task T --arch A [--set arch.X=...]   (kernel entries, time, memory, solver)
    ntkbench run|study ... --executor ray [--ray-address ADDR] [--ray-gpus-per-run G] [--ray-cpus-per-run C]
    ntkbench run|study ... [--kernel-cache DIR|off]; ntkbench cache list|clear   (ntkbench.cli_cache)

``--help`` prints :data:`DESCRIPTION` and :data:`EPILOG`, plain text.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ntkbench import signals
from ntkbench.cli_cache import add_cache_command, add_kernel_cache_options, cache_command, kernel_cache_options
from ntkbench.distributed.flags import add_executor_options, executor_options
from ntkbench.registry import UnknownNameError

if TYPE_CHECKING:
    from ntkbench.tracking import SyncResult


def parse_value(text: str) -> object:
    """JSON values (3, 0.1, true, null, [1, 2]) and Python's True/False/None; else the string."""
    python = {"True": True, "False": False, "None": None}
    if text in python:
        return python[text]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_settings(items: list[str]) -> dict[str, object]:
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects PREFIX.NAME=VALUE, got {item!r}")
        settings[key] = parse_value(value)
    return settings


def parse_ints(flag: str, text: str, minimum: int) -> tuple[int, ...]:
    try:
        values = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} expects comma-separated integers such as 0,1,2, got {text!r}") from None
    if any(v < minimum for v in values):
        raise ValueError(f"{flag} must be >= {minimum}, got {text!r}")
    return values


DESCRIPTION = ("Benchmark trained networks (nn) against their linearizations (taylor, entk)\n"
               "and infinite-width kernels (ntk, nngp), with every run tracked in MLflow.")
EPILOG = """examples:
  ntkbench run --task digits --method all --seeds 0,1,2 --set nn.lr=0.1
  ntkbench list tasks
  ntkbench study --task digits --quick
  ntkbench leaderboard
  ntkbench run --task iris --tracking offline, later: ntkbench sync
  ntkbench ui --task digits

Progress goes to stderr: a bar on a terminal, one line per finished run otherwise,
nothing with --quiet. Each command's --help lists its options."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ntkbench", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run methods on a task and log them to MLflow")
    run.add_argument("--task", default="digits")
    run.add_argument("--method", default="all", help="a method name, a comma-separated list, or all")
    run.add_argument("--arch", default="mlp")
    run.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    run.add_argument("--set", action="append", default=[], metavar="PREFIX.NAME=VALUE",
                     help="an option of the task (task.n_train=500), the architecture (arch.width=256) "
                          "or a method (nn.lr=0.1); repeatable")
    run.add_argument("--n-train", default=None, metavar="N[,N...]",
                     help="sweep the task's n_train, e.g. 100,200,400 (learning curves)")
    run.add_argument("--data-root", default=None, help="dataset folder; default $NTKBENCH_DATA or datasets/data")
    run.add_argument("--download", action="store_true",
                     help="let tasks that support it (mnist, cifar10, ...) download missing files")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    run.add_argument("--tracking-uri", default=None, help="MLflow store; default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    add_tracking_options(run)
    run.add_argument("--no-track", dest="tracking", action="store_const", const="off", help="same as --tracking off")
    add_kernel_cache_options(run)
    add_executor_options(run)
    add_quiet_option(run)
    board = sub.add_parser("leaderboard", help="render README.md, site/index.html and leaderboard.csv from the "
                                               "MLflow store and the committed entries")
    board.add_argument("--tracking-uri", default=None)
    board.add_argument("--entries", type=Path, default=Path("leaderboard/entries"))
    board.add_argument("--verified", type=Path, default=None, help=VERIFIED_HELP)
    board.add_argument("--out", type=Path, default=None,
                       help="output folder; default leaderboard/local (git-ignored), with --check leaderboard")
    board.add_argument("--entries-only", action="store_true",
                       help="the entries alone, no MLflow runs: how the committed leaderboard/ is rendered")
    board.add_argument("--check", action="store_true",
                       help="render the entries alone into a temporary folder and compare it byte for byte with "
                            "--out; exit 1 naming each stale file")
    study = sub.add_parser("study", help="run the study grid (ntkbench.study) on a task and teacher, then render its report")
    study.add_argument("--task", required=True)
    study.add_argument("--arch", default=None, help="the architecture (default mlp); not for a task whose grid "
                       "declares its architectures (mnist5k)")
    study.add_argument("--quick", action="store_true", help="the small CPU grid: 1 seed, label noise 0 and 0.5, 5 epochs (mnist5k: 1 seed, n_train 100)")
    study.add_argument("--set", action="append", default=[], metavar="PREFIX.NAME=VALUE",
                       help="an architecture option (arch.width=256), a task option for every run (task.n_test=1000) "
                            "or a grid setting (grid.n_trains=[500,1000], grid.seeds, grid.flip_n_trains, "
                            "grid.label_noise, grid.size); repeatable")
    study.add_argument("--tracking-uri", default=None)
    add_tracking_options(study)
    add_kernel_cache_options(study)
    add_executor_options(study)
    add_quiet_option(study)
    study.add_argument("--out", type=Path, default=Path("leaderboard/site"))
    report = sub.add_parser("report", help="render study-TASK.html and .md from the study's MLflow runs")
    report.add_argument("--task", required=True)
    report.add_argument("--tracking-uri", default=None)
    report.add_argument("--study-id", default=None, help="the study's ntkbench_study_id tag (default: the latest study of the task)")
    report.add_argument("--out", type=Path, default=Path("leaderboard/site"))
    export = sub.add_parser("export", help="write leaderboard entries (one per config and device) from MLflow runs")
    export.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    export.add_argument("--tracking-uri", default=None)
    export.add_argument("--out", type=Path, default=Path("leaderboard/entries"))
    validate = sub.add_parser("validate", help="check entry files and the maintainers' verified.json; report "
                                               "every problem, one line each")
    validate.add_argument("path", type=Path)
    validate.add_argument("--verified", type=Path, default=None, help=VERIFIED_HELP)
    sync = sub.add_parser("sync", help="import the run records of an outbox (--tracking offline) into an MLflow store")
    sync.add_argument("--outbox", default=None, help=OUTBOX_HELP)
    sync.add_argument("--tracking-uri", default=None, help="MLflow store; default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    sync.add_argument("--lease", default=None, metavar="SECONDS",
                      help="a RUNNING run of another host with no heartbeat for this long is marked FAILED "
                           "(default 600; runs of this host are checked by their pid)")
    add_quiet_option(sync, "no progress bar and no line per imported record; errors and the summary remain")
    store = sub.add_parser("store", help="maintain an MLflow store")
    store.add_argument("action", choices=["repair"], help="repair: finish or undo a half-done schema migration")
    store.add_argument("--tracking-uri", default=None, help="MLflow store; default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    server = sub.add_parser("server", help="a team tracking server: PostgreSQL and an mlflow server (artifacts "
                                           "proxied) with their data in one folder")
    server.add_argument("action", choices=["start", "stop", "status"])
    server.add_argument("--dir", type=Path, default=Path("tracking-server"), help="the server's folder "
                        "(database, artifacts, logs); default ./tracking-server")
    server.add_argument("--port", type=int, default=None, help="the mlflow server's port; default the folder's "
                        "last one, else 5000")
    server.add_argument("--host", default=None, help="interface the mlflow server binds; 0.0.0.0 serves other "
                        "machines too; default the folder's last, else 127.0.0.1")
    server.add_argument("--workers", type=int, default=None, help="the mlflow server's uvicorn processes; default "
                        "the folder's last, else 1 (faster than more for MLflow's keep-alive clients, see server.py)")
    server.add_argument("--backend-store-uri", default=None, help="a database of your own "
                        "(postgresql+psycopg2://USER@HOST:PORT/DB): then no PostgreSQL is started")
    ui = sub.add_parser("ui", help="serve the MLflow UI and print (and open, given a display) the URL of a task's runs")
    ui.add_argument("--task", default="digits", help="the task whose runs the URL shows (default digits)")
    ui.add_argument("--tracking-uri", default=None, help="MLflow store; default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db; "
                                                          "an http(s) server is not served again, only linked")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--no-browser", dest="browser", action="store_false", help="print the URL only")
    plan = sub.add_parser("plan", help="the kernel's entries, work, measured and H200 time, memory and solver for a "
                                       "task and architecture (ntkbench.plan)")
    plan.add_argument("--task", default="digits")
    plan.add_argument("--arch", default="mlp")
    plan.add_argument("--set", action="append", default=[], metavar="PREFIX.NAME=VALUE",
                      help="a task.* or arch.* option, as for run; repeatable")
    plan.add_argument("--dtype", default="float64", choices=["float32", "float64"],
                      help="the kernel methods compute in float64 by default")
    plan.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    plan.add_argument("--measure-seconds", type=float, default=1.0,
                      help="time spent measuring this device's kernel rate (at least one pair)")
    add_cache_command(sub)
    lst = sub.add_parser("list", help="list registered tasks, methods or architectures")
    lst.add_argument("what", choices=["tasks", "methods", "archs"])
    lst.add_argument("pattern", nargs="?", default="*")
    return parser


def _plan_command(args: argparse.Namespace) -> int:
    import torch

    from ntkbench.plan import plan
    from ntkbench.runner import resolve_device

    try:
        lines = plan(args.task, args.arch, parse_settings(args.set), getattr(torch, args.dtype),
                     resolve_device(args.device), args.measure_seconds)
    except (ValueError, UnknownNameError) as e:
        print(f"ntkbench: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


OUTBOX_HELP = "folder of offline run records; default $NTKBENCH_OUTBOX or ./mlruns-outbox"
VERIFIED_HELP = "the maintainers' list of reproduced entries; default verified.json beside the entries folder"


def add_tracking_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking", default="mlflow", choices=["mlflow", "offline", "off"],
                        help="mlflow: log live (if the store fails, go on into the outbox); offline: write run "
                             "records to the outbox for ntkbench sync, no MLflow needed; off: no tracking")
    parser.add_argument("--outbox", default=None, help=OUTBOX_HELP)


def add_quiet_option(parser: argparse.ArgumentParser,
                     text: str = "no progress on stderr (by default a bar on a terminal, else one line per finished "
                                 "run); errors remain") -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help=text)


def main(argv: list[str] | None = None) -> int:
    """The command line. SIGINT, SIGTERM and SIGHUP stop the work at its next safe point
    (``ntkbench.signals``): the current run ends KILLED, never RUNNING, and the exit code is
    130, 143 or 129."""
    args = build_parser().parse_args(argv)
    with signals.handling():
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    from ntkbench import arch, methods, tasks
    from ntkbench.runner import run, summary_text

    if args.command == "list":
        registry = {"tasks": tasks.TASKS, "methods": methods.METHODS, "archs": arch.ARCHS}[args.what]
        plugins = methods.PLUGINS if args.what == "methods" else {}
        print("\n".join(n + (f"  (plugin: {plugins[n]})" if n in plugins else "") for n in registry.list(args.pattern)))
        return 0
    if args.command in ("leaderboard", "export", "validate"):
        return _leaderboard_command(args)
    if args.command in ("study", "report"):
        return _study_command(args)
    if args.command == "sync":
        return _sync_command(args)
    if args.command == "store":
        return _store_command(args)
    if args.command == "server":
        return _server_command(args)
    if args.command == "ui":
        return _ui_command(args)
    if args.command == "plan":
        return _plan_command(args)
    if args.command == "cache":
        return cache_command(args)
    try:
        n_trains = parse_ints("--n-train", args.n_train, 1) if args.n_train else ()
        kernel_cache, max_gb = kernel_cache_options(args)
        results = run(task=args.task, method=args.method, arch=args.arch, seeds=parse_ints("--seeds", args.seeds, 0),
                      options=parse_settings(args.set), device=args.device, tracking_uri=args.tracking_uri,
                      tracking=args.tracking, outbox=args.outbox, n_trains=n_trains, data_root=args.data_root,
                      download=args.download, quiet=args.quiet, kernel_cache=kernel_cache, kernel_cache_max_gb=max_gb,
                      **executor_options(args))
    except (ValueError, UnknownNameError) as e:
        print(f"ntkbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        return _interrupted(e)
    print(summary_text(results))
    _outbox_note(args)
    return _exit_code(args, results)


def _exit_code(args: argparse.Namespace, results: list) -> int:
    """1 if a run did not finish; else 3 if runs meant for MLflow went to the outbox (the store
    failed or could not be reached: `ntkbench sync` imports them); else 0."""
    if any(r.status != "FINISHED" for r in results):
        return 1
    if args.tracking == "mlflow" and any(r.storage == "outbox" for r in results):
        print(f"ntkbench: {sum(r.storage == 'outbox' for r in results)} of {len(results)} runs are in the outbox, "
              "not the store; exit status 3", file=sys.stderr)
        return 3
    return 0


def _outbox_note(args: argparse.Namespace) -> None:
    if args.tracking == "offline":
        from ntkbench.tracking import resolve_outbox

        outbox = resolve_outbox(args.outbox)
        print(f"runs recorded in {outbox}/; import them into MLflow with `ntkbench sync --outbox {outbox}`")


def _sync_command(args: argparse.Namespace) -> int:
    """One line per record; exit 2 if a record (or the outbox) is bad, 1 if the store failed."""
    from ntkbench.progress import records
    from ntkbench.tracking.sync import DEFAULT_LEASE_S, sync

    try:
        lease = DEFAULT_LEASE_S if args.lease is None else float(args.lease)
    except ValueError:
        lease = float("nan")
    if not 0 < lease < float("inf"):
        print(f"ntkbench: error: --lease {args.lease} is not a number of seconds > 0; expected e.g. --lease 600",
              file=sys.stderr)
        return 2
    try:
        results = sync(args.outbox, args.tracking_uri, report=partial(_print_synced, quiet=args.quiet), lease_s=lease,
                       progress=partial(records, quiet=args.quiet))
    except ValueError as e:
        print(f"ntkbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("ntkbench: sync interrupted; run it again to finish (records already in the store are skipped)",
              file=sys.stderr)
        return e.exit_code if isinstance(e, signals.Interrupted) else 130
    outcomes = [r.outcome for r in results]
    counts = ", ".join(f"{outcomes.count(o)} {o}" for o in dict.fromkeys(outcomes))
    print(f"sync: {len(results)} record(s): {counts}" if results else "sync: no records in the outbox")
    return 2 if "bad" in outcomes else 1 if "failed" in outcomes else 0


def _store_command(args: argparse.Namespace) -> int:
    """``store repair``: one line saying what was done; exit 2 if the store cannot be repaired."""
    from ntkbench.tracking import resolve_uri
    from ntkbench.tracking.schema import repair

    uri = resolve_uri(args.tracking_uri)
    try:
        print(f"store repair: {uri}: {repair(uri)}")
    except Exception as e:  # MLflow's or the database's own error, in one line
        detail = (str(e).strip().splitlines() or [""])[0][:300]
        print(f"ntkbench: error: cannot repair the MLflow store {uri} ({type(e).__name__}: {detail})", file=sys.stderr)
        return 2
    return 0


def _server_command(args: argparse.Namespace) -> int:
    """start prints the tracking URI once the server answers; stop exits 1 if a process is left;
    status exits 0 when every service runs, else 1. A bad folder or a failed start: exit 2."""
    from ntkbench.tracking import server

    try:
        if args.action == "start":
            print(server.start(args.dir, args.port, args.host, args.backend_store_uri, args.workers))
            return 0
        if args.action == "stop":
            print("\n".join(server.stop(args.dir)))
            return 0
        services = server.status(args.dir)
    except server.ServerError as e:
        print(f"ntkbench: error: {e}", file=sys.stderr)
        return 1 if isinstance(e, server.StillRunning) else 2
    except KeyboardInterrupt as e:
        done = "; what it started is stopped" if args.action == "start" else ""
        print(f"ntkbench: server {args.action} interrupted{done}", file=sys.stderr)
        return e.exit_code if isinstance(e, signals.Interrupted) else 130
    print("\n".join(s.line() for s in services))
    return 0 if all(s.state == "running" for s in services) else 1


def _print_synced(result: SyncResult, quiet: bool = False) -> None:
    """One line per record (above the progress bar, if any); errors only when ``quiet``."""
    from tqdm.auto import tqdm

    if result.outcome in ("bad", "failed"):
        tqdm.write(f"ntkbench: error: {result.message}", file=sys.stderr)
    elif not quiet:
        tqdm.write(f"{result.outcome}: {result.message}", file=sys.stdout)


def _ui_command(args: argparse.Namespace) -> int:
    from ntkbench.tracking.ui import serve

    try:
        return serve(args.tracking_uri, args.task, args.host, args.port, args.browser)
    except ValueError as e:
        print(f"ntkbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def _interrupted(e: KeyboardInterrupt) -> int:
    code = e.exit_code if isinstance(e, signals.Interrupted) else 130
    print(f"ntkbench: stopped by {e or 'Ctrl-C'}; the current run is marked KILLED", file=sys.stderr)
    return code


def _leaderboard_command(args: argparse.Namespace) -> int:
    from ntkbench.leaderboard import build, stale
    from ntkbench.leaderboard.entries import validate
    from ntkbench.leaderboard.export import export
    from ntkbench.leaderboard.render import RENDERED

    if args.command == "validate":
        if not args.path.exists():
            print(f"ntkbench: error: {args.path} does not exist; expected an entry file or a folder of them", file=sys.stderr)
            return 2
        problems = validate(args.path, args.verified)
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem(s) in {args.path}")
        return 1 if problems else 0
    if args.command == "export":
        try:
            paths = export(args.run_ids, args.out, args.tracking_uri)
        except ValueError as e:
            print(f"ntkbench: error: {e}", file=sys.stderr)
            return 2
        print("\n".join(str(p) for p in paths))
        return 0
    if args.check:
        out = args.out or Path("leaderboard")
        paths = stale(args.entries, out, args.verified)
        for path in paths:
            print(f"ntkbench: error: {path} is stale: it is not what {args.entries} renders to; run `ntkbench "
                  f"leaderboard --entries-only --out {out}` and commit the result", file=sys.stderr)
        return 1 if paths else 0
    out = args.out or Path("leaderboard/local")
    try:
        rows, problems = build(args.tracking_uri, args.entries, out, args.verified, entries_only=args.entries_only)
    except ValueError as e:  # a store that is half-migrated or cannot be opened
        print(f"ntkbench: error: {e}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"ntkbench: left out: {problem}", file=sys.stderr)
    print(f"leaderboard: {len(rows)} rows ({sum(r.seeds for r in rows)} runs) -> "
          + ", ".join(str(out / name) for name in RENDERED))
    return 0


def _study_command(args: argparse.Namespace) -> int:
    from ntkbench.study import render_report, run_study
    from ntkbench.study.grid import configure, study_grid

    failed = 0
    if args.command == "study":
        try:
            settings = parse_settings(args.set)
            bad = [k for k in settings if k.split(".")[0] not in ("arch", "task", "grid")]
            if bad:
                raise ValueError(f"study --set takes arch.NAME, task.NAME or grid.NAME=VALUE, got {', '.join(bad)}")
            grid = configure(study_grid(args.task, args.quick),
                             {k: v for k, v in settings.items() if not k.startswith("arch.")})
            if grid.archs and args.arch is not None:
                raise ValueError(f"the {args.task} study declares its architectures "
                                 f"({', '.join(a.label for a in grid.archs)}); drop --arch, or set their options with --set arch.NAME=VALUE")
            kernel_cache, max_gb = kernel_cache_options(args)
            results = run_study(args.task, arch=args.arch or "mlp", grid=grid, tracking_uri=args.tracking_uri,
                                arch_options={k[len("arch."):]: v for k, v in settings.items() if k.startswith("arch.")},
                                tracking=args.tracking, outbox=args.outbox, quiet=args.quiet,
                                kernel_cache=kernel_cache, kernel_cache_max_gb=max_gb, **executor_options(args))
        except (ValueError, UnknownNameError) as e:
            print(f"ntkbench: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as e:
            return _interrupted(e)
        failed = sum(r.status != "FINISHED" for r in results)
        print(f"study: {len(results)} runs, {failed} failed")
        if args.tracking != "mlflow":
            _outbox_note(args)
            print(f"report: not rendered (--tracking {args.tracking}); "
                  + (f"after `ntkbench sync`, run `ntkbench report --task {args.task}`" if args.tracking == "offline"
                     else "the runs were not tracked"))
            return 1 if failed else 0
    path = render_report(args.task, args.tracking_uri, args.out, getattr(args, "study_id", None))
    print(f"report: {path}, {path.with_suffix('.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
