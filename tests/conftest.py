"""Fixtures shared by test folders: one torch thread for tests whose figures do not depend on
the thread count (two threads are often slower on the loaded 2-core machines), and a local Ray
cluster with 2 CPUs and 2 logical GPUs for the tile and out-of-core tests."""

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
