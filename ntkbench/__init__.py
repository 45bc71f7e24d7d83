"""ntkbench: is the neural tangent kernel a good model of real neural networks?

>>> import ntkbench
>>> results = ntkbench.run(task="digits", method="all", arch="mlp", seeds=(0, 1, 2))
"""

__version__ = "0.1.0"


def run(*args, **kwargs):
    """``ntkbench.runner.run``: fit and evaluate methods on a task (imported on first use)."""
    from ntkbench.runner import run as _run

    return _run(*args, **kwargs)
