"""The heads people fit today, for comparison (SPEC.md §2.6): trained by AdamW from random
initialization on frozen tokens (n, s, d).

- :class:`SoftmaxAttentionHead`: standard multi-head self-attention (Q, K, V, softmax scores
  over keys, output projection to the classes), then mean pooling over tokens, plus a bias.
- :class:`MLPHead`: a token-wise two-layer ReLU MLP, then mean pooling, plus a bias.
- :class:`AttentiveProbe`: the probe used today on frozen ViT features (V-JEPA, AIM,
  "Efficient Probing"): a few learnable queries cross-attend over the tokens (softmax over
  tokens, per attention head), and a linear classifier reads what they gathered.
- :func:`train_adamw`: mini-batch AdamW with a cosine learning-rate schedule on mean
  cross-entropy (decoupled weight decay, as practitioners use it). For the convex heads' own
  networks (``head.network(...)``) pass ``penalty=β`` instead, to minimize exactly the
  regularized objective mean loss + β · weight_decay of SPEC.md §1.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["SoftmaxAttentionHead", "MLPHead", "AttentiveProbe", "train_adamw", "TrainResult",
           "accuracy"]


def _initializer(seed: int, dtype: torch.dtype):
    """``init(*shape, fan_in)``: parameters drawn N(0, 1/fan_in) from one generator seeded
    with ``seed``, in the order they are made."""
    generator = torch.Generator().manual_seed(seed)

    def init(*shape, fan_in):
        return nn.Parameter(torch.randn(shape, generator=generator, dtype=dtype)
                            / math.sqrt(fan_in))

    return init


class SoftmaxAttentionHead(nn.Module):
    """softmax(Q Kᵀ / √d_h) V per head, concatenated, projected to c; mean over tokens + bias.

    >>> import torch
    >>> head = SoftmaxAttentionHead(d=6, c=3, n_heads=2, head_dim=4)
    >>> head(torch.zeros(5, 7, 6, dtype=torch.float64)).shape
    torch.Size([5, 3])
    """

    def __init__(self, d: int, c: int, n_heads: int = 5, head_dim: int | None = None,
                 seed: int = 0, dtype: torch.dtype = torch.float64):
        super().__init__()
        head_dim = head_dim or max(1, d // n_heads)
        init = _initializer(seed, dtype)
        inner = n_heads * head_dim
        self.n_heads, self.head_dim = n_heads, head_dim
        self.query, self.key, self.value = (init(d, inner, fan_in=d) for _ in range(3))
        self.out = init(inner, c, fan_in=inner)
        self.bias = nn.Parameter(torch.zeros(c, dtype=dtype))

    def _split(self, X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        n, s, _ = X.shape
        return (X @ W).reshape(n, s, self.n_heads, self.head_dim).transpose(1, 2)  # (n,h,s,e)

    def attention(self, X: torch.Tensor) -> torch.Tensor:
        """The attention weights softmax(Q Kᵀ / √d_h) of every head, (n, h, s, s): row a is
        query a's distribution over the keys (each row sums to 1)."""
        Q, K = self._split(X, self.query), self._split(X, self.key)
        return torch.softmax(Q @ K.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        n, s, _ = X.shape
        V = self._split(X, self.value)  # (n, h, s, e)
        mixed = (self.attention(X) @ V).transpose(1, 2).reshape(n, s, -1)  # (n, s, h·e)
        return (mixed @ self.out).mean(1) + self.bias  # (n, c)


class MLPHead(nn.Module):
    """Token-wise Linear(d, m) → ReLU → Linear(m, c), mean over tokens + bias.

    >>> import torch
    >>> MLPHead(d=6, c=3, width=8)(torch.zeros(5, 7, 6, dtype=torch.float64)).shape
    torch.Size([5, 3])
    """

    def __init__(self, d: int, c: int, width: int = 100, seed: int = 0,
                 dtype: torch.dtype = torch.float64):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.hidden = nn.Parameter(torch.randn(d, width, generator=generator, dtype=dtype)
                                   / math.sqrt(d))
        self.hidden_bias = nn.Parameter(torch.zeros(width, dtype=dtype))
        self.out = nn.Parameter(torch.randn(width, c, generator=generator, dtype=dtype)
                                / math.sqrt(width))
        self.bias = nn.Parameter(torch.zeros(c, dtype=dtype))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(X @ self.hidden + self.hidden_bias)  # (n, s, m)
        return (hidden @ self.out).mean(1) + self.bias  # (n, c)


class AttentiveProbe(nn.Module):
    """``n_queries`` learnable queries q_j cross-attend over the tokens, then a linear map:

        w_{j,h}(t) = softmax_t(q_{j,h} · (x_t W_K)_h / √e),   z_{j,h} = Σ_t w_{j,h}(t) (x_t W_V)_h,
        logits = [z_{1,1} … z_{J,H}] W_O + b,

    with H attention heads of e = ``head_dim`` features each (keys and values are projections
    of the tokens; the queries are parameters, not computed from the tokens).

    >>> import torch
    >>> probe = AttentiveProbe(d=6, c=3, n_queries=2, n_heads=2, head_dim=4)
    >>> probe(torch.zeros(5, 7, 6, dtype=torch.float64)).shape
    torch.Size([5, 3])
    """

    def __init__(self, d: int, c: int, n_queries: int = 4, n_heads: int = 4,
                 head_dim: int | None = None, seed: int = 0, dtype: torch.dtype = torch.float64):
        super().__init__()
        head_dim = head_dim or max(1, d // n_heads)
        init = _initializer(seed, dtype)
        inner = n_heads * head_dim
        self.n_queries, self.n_heads, self.head_dim = n_queries, n_heads, head_dim
        self.queries = init(n_queries, n_heads, head_dim, fan_in=head_dim)
        self.key, self.value = init(d, inner, fan_in=d), init(d, inner, fan_in=d)
        self.out = init(n_queries * inner, c, fan_in=n_queries * inner)
        self.bias = nn.Parameter(torch.zeros(c, dtype=dtype))

    def attention(self, X: torch.Tensor) -> torch.Tensor:
        """The weights w (n, J, H, s) of every query and head over the tokens (sum to 1 over
        the tokens)."""
        n, s, _ = X.shape
        K = (X @ self.key).reshape(n, s, self.n_heads, self.head_dim)  # (n, s, H, e)
        scores = torch.einsum("jhe,nthe->njht", self.queries, K) / math.sqrt(self.head_dim)
        return torch.softmax(scores, dim=-1)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        n, s, _ = X.shape
        V = (X @ self.value).reshape(n, s, self.n_heads, self.head_dim)  # (n, s, H, e)
        gathered = torch.einsum("njht,nthe->njhe", self.attention(X), V)  # (n, J, H, e)
        return gathered.reshape(n, -1) @ self.out + self.bias  # (n, c)


@dataclass(frozen=True)
class TrainResult:
    """A trained model and the regularized objective it reached on the full training set.

    With a validation set, ``model`` holds the weights of the epoch with the best validation
    accuracy (``best_epoch``, ``val_acc``): early stopping, as practitioners do."""

    model: nn.Module
    objective: float  # mean loss (+ penalty · weight_decay when a penalty is used)
    seconds: float
    epochs: int
    best_epoch: int | None = None
    val_acc: float | None = None


def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor,
             batch_size: int = 4096) -> float:
    """Fraction of ``y`` predicted right by ``model`` (logits) from tokens ``X``."""
    with torch.no_grad():
        right = sum(int((model(X[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                    for i in range(0, len(y), batch_size))
    return right / max(len(y), 1)


def train_adamw(model: nn.Module, X: torch.Tensor, y: torch.Tensor, lr: float = 1e-2,
                epochs: int = 50, batch_size: int = 256, weight_decay: float = 0.0,
                penalty: float = 0.0, seed: int = 0,
                validation: tuple[torch.Tensor, torch.Tensor] | None = None) -> TrainResult:
    """Mini-batch AdamW with cosine decay on mean cross-entropy.

    ``weight_decay``: AdamW's decoupled decay (the practitioner's regularizer).
    ``penalty``: β, adding β · ``model.weight_decay()`` to the loss (the convex heads'
    networks), so the trained objective is exactly SPEC.md §1's.
    ``validation``: (X, y) scored after every epoch; the best epoch's weights are kept.
    """
    if not (lr > 0 and epochs >= 1 and batch_size >= 1):
        raise ValueError(f"lr, epochs, batch_size: expected positive values, got {lr!r}, "
                         f"{epochs!r}, {batch_size!r}")
    start = time.perf_counter()
    best_epoch, best_acc, best_state = None, -1.0, None
    n = X.shape[0]
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(n / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    loss_fn = nn.CrossEntropyLoss()

    def objective(Xb, yb):
        value = loss_fn(model(Xb), yb)
        return value + penalty * model.weight_decay() if penalty else value

    for epoch in range(1, epochs + 1):
        for batch in torch.randperm(n, generator=generator).split(batch_size):
            optimizer.zero_grad()
            objective(X[batch], y[batch]).backward()
            optimizer.step()
            schedule.step()
        if validation is not None:
            score = accuracy(model, *validation)
            if score > best_acc:
                best_epoch, best_acc = epoch, score
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    with torch.no_grad():  # in batches: some networks' intermediates grow with n·s²
        total = sum(float(nn.functional.cross_entropy(model(X[i:i + 4096]), y[i:i + 4096],
                                                      reduction="sum"))
                    for i in range(0, n, 4096))
        final = total / n + (penalty * float(model.weight_decay()) if penalty else 0.0)
    return TrainResult(model, final, time.perf_counter() - start, epochs, best_epoch,
                       best_acc if validation is not None else None)
