"""Fixtures shared by test folders: one torch thread for tests whose figures do not depend on
the thread count (two threads are often slower on the loaded 2-core machines), a local Ray
cluster with 2 CPUs and 2 logical GPUs for the tile and out-of-core tests, and frozen earlier
objects for the study fixtures."""

import gc

import pytest
import torch


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ray_tiles_cluster():
    """A local Ray cluster with 2 CPUs and 2 logical GPUs (kept if one is already connected)."""
    from ntkbench.distributed import connect

    torch.set_num_threads(1)
    ray = connect("local", num_cpus=2, num_gpus=2)  # a new cluster, never one `ray start` left running
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def frozen_gc():
    """The objects earlier tests left are moved out of the collector's reach (``gc.freeze``)
    while a study runs: the runner's full ``gc.collect()`` before each run (its memory baseline)
    then scans only the study's own objects. In a session that has loaded every test module it
    took 0.37 s a run, a third of the miniature image study's time."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()

