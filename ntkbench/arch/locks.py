"""Advisory file locks (``fcntl.flock``) on a kernel cache entry's ``lock`` file: exclusive
while one process fills the entry, shared while one opens it, and removal only by a process
that gets the exclusive lock without waiting. flock excludes two open files of one process as
it excludes two processes; it is local to a host (NFS needs its lock daemon)."""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def locked(path: Path, exclusive: bool, create: bool) -> Iterator[bool]:
    """Hold the entry's flock; yields False when the entry is gone (or was replaced) by the time
    the lock is held, so the caller looks again."""
    if create:
        path.mkdir(parents=True, exist_ok=True)
    lock = path / "lock"
    try:
        fd = os.open(lock, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except FileNotFoundError:
        yield False
        return
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"ntkbench: kernel cache entry {path} is locked by another process (computing or removing it); "
                  "waiting for it", file=sys.stderr)
            fcntl.flock(fd, mode)
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        yield same
    finally:
        os.close(fd)


def remove_unless_locked(path: Path) -> bool:
    """Remove an entry unless another process holds its lock; True if removed."""
    try:
        fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        shutil.rmtree(path, ignore_errors=True)
        return True
    finally:
        os.close(fd)
