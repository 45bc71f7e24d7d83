"""Methods, one module each, registered by name with ``@register_method``."""

from ntkbench.methods import entk, kernel, nn, taylor  # noqa: F401  (registers the methods)
from ntkbench.methods.base import METHODS, Predictor, RunContext, get, options_of, register_method

__all__ = ["METHODS", "Predictor", "RunContext", "get", "options_of", "register_method"]
