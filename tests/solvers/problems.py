"""Shared well-conditioned kernel ridge problems with an independent float64 reference."""

from dataclasses import dataclass

import torch


def rbf(a: torch.Tensor, b: torch.Tensor, lengthscale: float = 1.5) -> torch.Tensor:
    return torch.exp(-torch.cdist(a, b) ** 2 / (2 * lengthscale**2))


@dataclass
class Problem:
    """K (n, n) float64, Y (n, c), the relative ridge, the reference weights
    (K + ridge·tr(K)/n·I)^{-1} Y by LU (torch.linalg.solve: neither Cholesky nor CG) and the
    2-norm condition number kappa of K + ridge·tr(K)/n·I."""

    x: torch.Tensor
    k: torch.Tensor
    y: torch.Tensor
    ridge: float
    reference: torch.Tensor
    kappa: float


def make_problem(n: int = 200, c: int = 4, ridge: float = 1e-2, seed: int = 0) -> Problem:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    k = rbf(x, x)
    y = torch.randn(n, c, generator=g, dtype=torch.float64)
    a = k + ridge * float(torch.trace(k)) / n * torch.eye(n, dtype=torch.float64)
    return Problem(x, k, y, ridge, torch.linalg.solve(a, y), float(torch.linalg.cond(a)))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per column ||a - b|| / ||b||."""
    return (a.to(b.dtype) - b).norm(dim=0) / b.norm(dim=0)
