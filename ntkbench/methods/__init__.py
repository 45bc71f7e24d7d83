"""Methods, one module each, registered by name with ``@register_method``.

Other packages add methods through the ``ntkbench.methods`` entry-point group::

    [project.entry-points."ntkbench.methods"]
    my-method = "my_pkg.my_module:MyMethod"

Each is registered under its entry-point name when this package is imported (``PLUGINS`` maps
those names to their ``module:Class``). A plugin that fails to import is skipped with one
warning line; a plugin name that is already taken raises the registry's duplicate error.
"""

import logging
import warnings
from importlib.metadata import entry_points

with warnings.catch_warnings():  # torch.func.jvp's first call imports this, and its torch.jit.script put 2 lines
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
    try:  # on stderr of every command that runs taylor or entk; a torch without the module has no warning either
        import torch._decomp.decompositions_for_jvp  # noqa: F401
    except ImportError:
        pass

from ntkbench.methods import entk, kernel, nn, taylor  # noqa: F401  (registers the methods)
from ntkbench.methods.base import (AT_EPOCH, METHODS, Predictor, RunContext, get, linearizes, option_names, options_of,
                                   register_method, resolved)

__all__ = ["AT_EPOCH", "METHODS", "PLUGINS", "Predictor", "RunContext", "get", "linearizes", "option_names", "options_of",
           "register_method", "resolved"]

PLUGINS: dict[str, str] = {}


def _load_plugins() -> None:
    for ep in entry_points(group="ntkbench.methods"):
        try:
            cls = ep.load()
        except Exception as e:  # a broken plugin must not break ntkbench
            reason = (str(e).splitlines() or [""])[0]
            logging.getLogger(__name__).warning(
                "ntkbench: skipping method plugin %r (%s): %s: %s", ep.name, ep.value, type(e).__name__, reason)
            continue
        if ep.name not in METHODS or METHODS.get(ep.name) is not cls:  # unless it registered itself
            register_method(ep.name)(cls)  # raises if the name is taken
        PLUGINS[ep.name] = ep.value


_load_plugins()
