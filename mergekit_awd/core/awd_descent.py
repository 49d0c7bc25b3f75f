"""The one optimiser of AWD's δ (paper Algorithm 1 and its variants): a step, and the loop around it.

Every δ solver of the package (``core.awd.solve_reduced`` on the K-dimensional span, ``core.awd_direct``
on the full δ, ``core.awd_rows`` on every output row at once) runs ``descend``: δ⁰ = 0, then
``settings.steps`` steps of

* ``gd``:   δ ← δ − β ∇L                                         (the paper's Algorithm 1)
* ``sgd``:  torch.optim.SGD with momentum μ and weight decay (the authors' released code)
* ``adam``: torch.optim.Adam's update with ``ADAM_BETAS`` and ``ADAM_EPS``

keeping the iterate with the lowest objective (δ⁰ included, so the result is never worse than δ = 0).
A problem is one objective (its loss a Python float) or many independent ones solved together (the
loss a tensor [R], one per problem, laid out on the *last* axis of δ: rows last, as ``core.awd_rows``
computes them); the best iterate is then kept per problem.  Each step returns a new tensor (never in
place), so a kept iterate is never overwritten.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Tuple, Union

import torch

# Adam's usual constants; ε is in the units of the (relative or absolute) gradient.
ADAM_BETAS: Tuple[float, float] = (0.9, 0.999)
ADAM_EPS: float = 1e-8

Loss = Union[float, torch.Tensor]


class SolverSettings(Protocol):
    """What the optimiser reads of ``core.awd.SolverSettings`` (the one home of their defaults)."""

    steps: int
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float


LossAndGrad = Callable[[torch.Tensor], Tuple[Loss, torch.Tensor]]


class Optimizer:
    """The step of ``settings.optimizer`` (a ``core.awd.SolverSettings``) and its state (momentum,
    Adam's moments); the update of the step numbered ``step`` (1, 2, …) from δ and ∇L at δ."""

    def __init__(self, settings: SolverSettings) -> None:
        self.settings = settings
        self.velocity: Optional[torch.Tensor] = None
        self.moment1: Optional[torch.Tensor] = None
        self.moment2: Optional[torch.Tensor] = None

    def step(self, delta: torch.Tensor, grad: torch.Tensor, step: int) -> torch.Tensor:
        if self.settings.optimizer == "sgd":
            return self._sgd(delta, grad)
        if self.settings.optimizer == "adam":
            return self._adam(delta, grad, step)
        return delta.add(grad, alpha=-self.settings.lr)

    def _sgd(self, delta: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """torch.optim.SGD (dampening 0, not Nesterov): g ← ∇ + wd·δ, v ← μv + g (v = g at the first
        step), δ ← δ − lr·v.  Linear in (δ, ∇, v), so iterates stay in span{τ_k}."""
        g = grad.add(delta, alpha=self.settings.weight_decay)
        self.velocity = g if self.velocity is None else self.velocity.mul(self.settings.momentum).add_(g)
        return delta.add(self.velocity, alpha=-self.settings.lr)

    def _adam(self, delta: torch.Tensor, grad: torch.Tensor, step: int) -> torch.Tensor:
        """δ ← δ − β m̂ / (√v̂ + ε) with m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ), in one update."""
        beta1, beta2 = ADAM_BETAS
        if self.moment1 is None:
            self.moment1, self.moment2 = torch.zeros_like(delta), torch.zeros_like(delta)
        self.moment1.lerp_(grad, 1 - beta1)
        self.moment2.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denominator = self.moment2.sqrt().add_(ADAM_EPS * math.sqrt(1 - beta2**step))
        step_size = self.settings.lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
        return delta.addcdiv(self.moment1, denominator, value=-step_size)


@dataclass(frozen=True)
class Descent:
    """The best iterate: δ, its loss, the loss at δ⁰ = 0 (floats for one problem, [R] tensors for
    many), and for one problem the index of the best step (0 = δ⁰; None for many)."""

    delta: torch.Tensor
    loss: Loss
    initial_loss: Loss
    best_step: Optional[int]


def descend(loss_and_grad: LossAndGrad, delta: torch.Tensor, settings: SolverSettings) -> Descent:
    """Run ``settings.steps`` optimiser steps from ``delta`` (see the module docstring)."""
    loss, grad = loss_and_grad(delta)
    many = isinstance(loss, torch.Tensor)
    initial = loss.clone() if many else loss
    best_loss, best_delta, best_step = (loss.clone(), delta.clone(), None) if many else (loss, delta, 0)
    optimizer = Optimizer(settings)
    for step in range(1, settings.steps + 1):
        delta = optimizer.step(delta, grad, step)
        loss, grad = loss_and_grad(delta)
        if many:
            better = loss < best_loss
            best_loss = torch.where(better, loss, best_loss)
            best_delta = torch.where(better, delta, best_delta)
        elif loss < best_loss:
            best_loss, best_delta, best_step = loss, delta, step
    return Descent(best_delta if many else best_delta.clone(), best_loss, initial, best_step)


__all__ = ["ADAM_BETAS", "ADAM_EPS", "Optimizer", "Descent", "descend"]
