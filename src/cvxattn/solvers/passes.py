"""Passes of a head's network over the samples, in chunks of bounded memory.

The factorized solver touches the data only through three sums over samples, each computed chunk
by chunk so that no intermediate holds more than ``chunk_size`` samples:

- ``outputs(W1, W2)``: the network's outputs p_i (n, c) (or (n, s, c)), without intercept;
- ``loss_and_gradient(W1, W2, b)``: the mean loss and its gradients in W1, W2 and b;
- ``forward(duals, V)`` / ``backward(duals, U)``: the gradient blocks M_g = (1/n) Σ_i A_{i,g}ᵀ λ_i
  applied to vectors, through the network with probe heads (SPEC.md §4): with
  φ(P1, P2) = (1/n) Σ_i ⟨λ_i, net_i(P1, P2)⟩ = Σ_{g,r} vec(P1_{g,r})ᵀ M_g vec(P2_{g,r}),
  ∂φ/∂P1 = M_g vec(P2) and ∂φ/∂P2 = M_gᵀ vec(P1). No dense Z or M is formed.

The lifted data of a chunk (masks, Gram matrices, FFTs) is kept between passes when
``cache`` is true, else recomputed each pass. ``dtype`` may differ from the tokens' (float64
passes over float32 tokens, chunk by chunk).
"""

from __future__ import annotations

import torch

from ..problem import Problem, checked_lift

__all__ = ["NetworkPasses"]


class NetworkPasses:
    """The network of ``problem.head`` applied to ``problem.X`` in chunks of samples."""

    def __init__(self, problem: Problem, chunk_size: int | None = None, cache: bool = True,
                 dtype: torch.dtype | None = None):
        n = problem.n
        size = n if chunk_size is None else max(1, min(int(chunk_size), n))
        self.problem = problem
        self.head = problem.head
        self.chunk_size = size
        self.dtype = problem.X.dtype if dtype is None else dtype  # the passes' arithmetic
        self.slices = [slice(start, min(start + size, n)) for start in range(0, n, size)]
        self._cache: dict[int, dict[str, torch.Tensor]] | None = {} if cache else None
        self.count = 0  # passes made: a forward or a backward of the network over all samples
        self.closed_form = False  # whether the gradient blocks were applied in closed form
        # MLP, gated FNO/B-FNO: the pooled network is a product with the design Φ (the linear
        # FNO and B-FNO build none: theirs collapses to the mean token without it)
        self.design = problem.pooled and self.head.network_design

    def chunks(self):
        """(slice, lifted data) for every chunk, in order."""
        for k, rows in enumerate(self.slices):
            if self._cache is not None and k in self._cache:
                yield rows, self._cache[k]
                continue
            data = checked_lift(self.head, self.head.lift(self.problem.X[rows].to(self.dtype),
                                                          design=self.design))
            if self._cache is not None:
                self._cache[k] = data
            yield rows, data

    def _net(self, W1, W2, data):
        if W1.shape[1] == 0:  # no heads yet: zero outputs, still connected to W1 and W2
            X = data["X"]
            shape = (X.shape[0], self.head.c) if self.problem.pooled else (*X.shape[:2],
                                                                            self.head.c)
            return X.new_zeros(shape) + 0 * (W1.sum() + W2.sum())
        return self.head.network_outputs(W1, W2, data, self.problem.pooled)

    def outputs(self, W1: torch.Tensor, W2: torch.Tensor) -> torch.Tensor:
        """Network outputs without intercept: (n, c) pooled or (n, s, c)."""
        self.count += 1
        with torch.no_grad():
            return torch.cat([self._net(W1, W2, data) for _, data in self.chunks()])

    def loss_and_gradient(self, W1: torch.Tensor, W2: torch.Tensor, b: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean loss (1/n) Σ_i ℓ(p_i + b, y_i) and its gradients in (W1, W2, b)."""
        problem = self.problem
        self.count += 2
        W1 = W1.detach().requires_grad_(True)
        W2 = W2.detach().requires_grad_(True)
        b = b.detach().requires_grad_(problem.fit_intercept)
        total = W1.new_zeros(())
        grads = [torch.zeros_like(W1), torch.zeros_like(W2), torch.zeros_like(b)]
        with torch.enable_grad():
            for rows, data in self.chunks():
                out = self._net(W1, W2, data)
                if problem.fit_intercept:
                    out = out + b
                # the mean over all n samples, accumulated chunk by chunk
                value = problem.loss.value(out, problem.y[rows]) * (out.shape[0] / problem.n)
                wrt = (W1, W2, b) if problem.fit_intercept else (W1, W2)
                for acc, g in zip(grads, torch.autograd.grad(value, wrt)):
                    acc += g
                total += value.detach()
        return total, grads[0], grads[1], grads[2]

    def _product(self, duals: torch.Tensor, fixed: torch.Tensor, left_fixed: bool
                 ) -> torch.Tensor:
        """M_g or M_gᵀ applied to ``fixed``: in the head's closed form when it has one for
        pooled outputs (``Head.gradient_product``, one pass), else through probe heads."""
        if self.problem.pooled:
            total = None
            for rows, data in self.chunks():
                part = self.head.gradient_product(duals[rows].to(self.dtype), fixed, data,
                                                  transpose=left_fixed)
                if part is None:
                    break
                total = part if total is None else total + part
            else:
                self.count += 1
                self.closed_form = True
                return total / self.problem.n
        return self._probe(duals, fixed, left_fixed)

    def _probe(self, duals: torch.Tensor, fixed: torch.Tensor, left_fixed: bool) -> torch.Tensor:
        head = self.head
        G, k = fixed.shape[:2]
        if left_fixed:  # P1 = U given, differentiate in P2: Mᵀ U
            P1 = head.unvec_w1(fixed)
            P2 = fixed.new_zeros((G, k, *head.w2_shape), requires_grad=True)
            target = P2
        else:  # P2 = V given, differentiate in P1: M V
            P2 = head.unvec_w2(fixed)
            P1 = fixed.new_zeros((G, k, *head.w1_shape), requires_grad=True)
            target = P1
        grad = torch.zeros_like(target)
        self.count += 2
        with torch.enable_grad():
            for rows, data in self.chunks():
                phi = (self._net(P1, P2, data) * duals[rows]).sum() / self.problem.n
                grad += torch.autograd.grad(phi, target)[0]
        return head.vec_w2(grad) if left_fixed else head.vec_w1(grad)

    def forward(self, duals: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """M_g V_g for right vectors V (G, k, q); returns (G, k, p)."""
        return self._product(duals, V, left_fixed=False)

    def backward(self, duals: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
        """M_gᵀ U_g for left vectors U (G, k, p); returns (G, k, q)."""
        return self._product(duals, U, left_fixed=True)
