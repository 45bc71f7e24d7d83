"""The leave-one-out ridge grid extends past an edge choice, up to its bounds."""

import math

import torch

from ntkbench.solvers import default_ridge_grid, loo_ridge
from ntkbench.solvers.ridge import EXTENSION_BOUNDS


def _problem(n: int, d: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, 2, generator=g, dtype=torch.float64) + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x @ x.T, y


def test_a_realizable_target_extends_the_grid_down_to_its_bound():
    # y = X w exactly and K = X Xᵀ of rank d < n - 1: every point is predicted exactly from the
    # others as the ridge goes to 0, so the LOO error falls with the ridge (like λ²) and the
    # optimum lies below the default grid's 1e-6.
    k, y = _problem(40, 5, 0.0, 0)
    choice = loo_ridge(k, y)
    assert choice.ridge < 1e-6 and choice.at_edge
    assert math.isclose(float(choice.grid[0]), EXTENSION_BOUNDS[0], rel_tol=1e-6)
    assert choice.ridge == float(choice.grid[0])
    # The extension only adds values below the default grid, in its own half-decade steps.
    default = default_ridge_grid()
    assert torch.allclose(choice.grid[-len(default):], default)
    steps = choice.grid[1:] / choice.grid[:-1]
    assert torch.allclose(steps, torch.full_like(steps, 10**0.5))


def test_an_explicit_grid_is_searched_as_given():
    k, y = _problem(40, 5, 0.0, 0)
    grid = torch.tensor([1e-3, 1e-2, 1e-1], dtype=torch.float64)
    choice = loo_ridge(k, y, grid=grid)
    assert torch.equal(choice.grid, grid) and choice.ridge == 1e-3 and choice.at_edge


def test_after_extension_the_choice_is_interior_or_at_a_bound():
    # Over noisy problems: the returned choice is either strictly inside the searched grid, or on
    # an edge that is a bound of the extension (so nothing beyond it was allowed).
    for seed in range(6):
        k, y = _problem(50, 20, 0.5 * seed, seed)
        choice = loo_ridge(k, y)
        index = int((choice.grid == choice.ridge).nonzero().max())
        interior = 0 < index < len(choice.grid) - 1
        assert interior != choice.at_edge
        if choice.at_edge:
            bound = EXTENSION_BOUNDS[0] if index == 0 else EXTENSION_BOUNDS[1]
            step = 10**0.5
            assert bound / step < choice.ridge < bound * step
        # The extended search never loses against the default grid alone.
        plain = loo_ridge(k, y, grid=default_ridge_grid(), extend=None)
        assert float(choice.loo_mse.min()) <= float(plain.loo_mse.min())
