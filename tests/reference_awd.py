"""An independent reference for the AWD objective and Algorithm 1, written with autograd.

It shares no code with mergekit_awd.core: it differentiates the paper's eq. 12–14 literally,
runs plain gradient descent from δ⁰ = 0 on τ/s (relative units, s = mean ‖τ_i‖), and returns
the iterate with the lowest objective (the package's documented choice).
"""

from typing import List

import torch


def paper_objective(tau: torch.Tensor, delta: torch.Tensor, alpha: float) -> torch.Tensor:
    """1/(K(K−1)) Σ_{i≠j} |cos(τ_i−δ, τ_j−δ)| + α‖δ‖ (pairs with a zero vector count 0)."""
    k = tau.shape[0]
    total = delta.new_zeros(())
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            a, b = tau[i] - delta, tau[j] - delta
            na, nb = a.norm(), b.norm()
            if float(na.detach()) > 0 and float(nb.detach()) > 0:
                total = total + (a @ b / (na * nb)).abs()
    norm = delta.norm() if float(delta.detach().abs().sum()) > 0 else delta.sum() * 0
    return total / (k * (k - 1)) + alpha * norm


def paper_delta(task_vectors: List[torch.Tensor], alpha: float, lr: float, steps: int) -> torch.Tensor:
    """δ for flattened task vectors (float64), relative units, best iterate of plain GD."""
    tau = torch.stack([t.reshape(-1).double() for t in task_vectors])
    norms = tau.norm(dim=1)
    active = norms > 0
    scale = float(norms[active].mean())
    points = tau[active] / scale
    k = tau.shape[0]
    delta = torch.zeros(tau.shape[1], dtype=torch.float64)
    best, best_loss = delta.clone(), None
    for step in range(steps + 1):
        d = delta.clone().requires_grad_(True)
        # pair normalisation over all K task vectors, zero vectors contributing nothing
        loss = paper_objective(points, d, alpha) * (points.shape[0] * (points.shape[0] - 1)) / (k * (k - 1))
        if best_loss is None or float(loss) < best_loss:
            best_loss, best = float(loss), delta.clone()
        if step == steps:
            break
        (grad,) = torch.autograd.grad(loss, d)
        delta = delta - lr * grad
    return best * scale
