"""Faithfulness of token attributions, measured rather than claimed.

- Deletion (Petsiuk et al., RISE, 2018): replace the tokens of an image one at a time, in the
  order an explanation ranks them (most positive contribution to the predicted class first), by
  a reference token (the training-mean token), and re-evaluate that class's logit after each
  step: a curve f(0), …, f(s). The deletion AUC is the area (trapezoid over k/s ∈ [0, 1])
  under the class's softmax probability, RISE's measure: lower is better (the class loses
  its probability faster when the tokens the explanation calls important go first). Across
  models it also reflects how confident each model is, so compare it with each model's own
  random order too. The logit curve can be normalized per image to start at 1 and end at 0,
  (f(k) − f(s)) / (f(0) − f(s)); that area is robust only as a median (the normalization
  divides by nearly zero when deleting every token barely moves the logit).
- Localisation: where objects lie on a plain background (Fashion-MNIST), the pixels above a
  threshold pooled to the token grid are a free ground-truth mask; the Jaccard index of the
  top-k attributed tokens (k = the mask's size) with it, and for clusters the best-matching
  cluster's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = ["deletion_logits", "deletion_curves", "target_curves", "deletion_auc",
           "gradient_times_input", "backbone_view", "foreground_tokens",
           "top_k_jaccard", "cluster_jaccard", "random_orders"]


def deletion_logits(logits: Callable[[torch.Tensor], torch.Tensor], X, order, reference,
                    batch_size: int = 4096) -> torch.Tensor:
    """All logits (n, s + 1, c) after the first k = 0 … s tokens of ``order[i]`` are replaced
    by ``reference`` in image i.

    ``logits``: tokens (m, s, d) → logits (m, c). ``X`` (n, s, d); ``order`` (n, s), a
    permutation of the tokens per image; ``reference`` (d,).
    """
    X = torch.as_tensor(X)
    n, s, d = X.shape
    order = torch.as_tensor(np.asarray(order), dtype=torch.int64)
    if order.shape != (n, s) or not bool((order.sort(1).values == torch.arange(s)).all()):
        raise ValueError(f"order: expected a permutation of the {s} tokens for each of the "
                         f"{n} images, shape ({n}, {s}), got shape {tuple(order.shape)}")
    reference = torch.as_tensor(reference, dtype=X.dtype).reshape(d)
    # rank[i, t] = step at which token t is deleted; token t is gone after k steps if rank < k
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(s).expand(n, s))
    steps = torch.arange(s + 1)
    parts = []
    per_image = max(1, batch_size // (s + 1))
    with torch.no_grad():
        for start in range(0, n, per_image):
            rows = slice(start, min(start + per_image, n))
            gone = rank[rows, None, :] < steps[None, :, None]  # (r, s+1, s)
            variants = torch.where(gone[..., None], reference, X[rows, None])  # (r,s+1,s,d)
            parts.append(logits(variants.reshape(-1, s, d)).reshape(gone.shape[0], s + 1, -1))
    return torch.cat(parts)


def deletion_curves(logits: Callable[[torch.Tensor], torch.Tensor], X, order, reference,
                    target, probability: bool = False) -> np.ndarray:
    """f[i, k] = logit of class ``target[i]`` (its softmax probability with ``probability``)
    after the first k tokens of ``order[i]`` are replaced by ``reference``; (n, s + 1)."""
    return target_curves(deletion_logits(logits, X, order, reference), target, probability)


def target_curves(outputs: torch.Tensor, target, probability: bool = False) -> np.ndarray:
    """The ``target[i]`` column of logits (n, k, c), or of their softmax; (n, k)."""
    target = torch.as_tensor(np.asarray(target), dtype=torch.int64)
    if target.shape != outputs.shape[:1]:
        raise ValueError(f"target: expected ({outputs.shape[0]},) class indices, got "
                         f"{tuple(target.shape)}")
    if probability:
        outputs = torch.softmax(outputs, dim=2)
    index = target[:, None, None].expand(-1, outputs.shape[1], 1)
    return outputs.gather(2, index)[..., 0].detach().cpu().double().numpy()


def gradient_times_input(logits: Callable[[torch.Tensor], torch.Tensor], X, target,
                         reference) -> np.ndarray:
    """Gradient × input per token, (n, s): Σ_k ∂f_target/∂x_t[k] · (x_t[k] − reference[k]),
    the first-order estimate of what replacing token t by the reference would remove (the
    common baseline explanation; exact only for a head that is linear in X)."""
    X = torch.as_tensor(X).detach().clone().requires_grad_(True)
    target = torch.as_tensor(np.asarray(target), dtype=torch.int64)
    reference = torch.as_tensor(reference, dtype=X.dtype)
    with torch.enable_grad():
        f = logits(X).gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(f, X)
    return (grad * (X.detach() - reference)).sum(2).double().numpy()


def deletion_auc(curves: np.ndarray, normalize: bool = True) -> np.ndarray:
    """The area under each deletion curve over k/s ∈ [0, 1] (trapezoid), (n,).

    ``normalize``: first map each curve to (f(k) − f(s)) / (f(0) − f(s)) (logits: start 1,
    end 0); NaN where deleting every token does not change f (nothing to normalize by).
    Probabilities are compared as they are.
    """
    curves = np.asarray(curves, dtype=np.float64)
    if normalize:
        first, last = curves[:, :1], curves[:, -1:]
        span = first - last
        with np.errstate(invalid="ignore", divide="ignore"):
            curves = np.where(np.abs(span) > 1e-12, (curves - last) / span, np.nan)
    k = curves.shape[1] - 1
    return (curves[:, :-1] + curves[:, 1:]).sum(1) / (2 * k)


def random_orders(n: int, s: int, seed: int = 0) -> np.ndarray:
    """n random permutations of s tokens from ``seed``, (n, s)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(s) for _ in range(n)]) if n else np.zeros((0, s), int)


def backbone_view(image: np.ndarray, crop_fraction: float = 1.0) -> np.ndarray:
    """The central square of side ``crop_fraction`` · min(H, W) that a backbone's center crop
    keeps (EfficientNet-Lite: S / (S + 32)), as an array: what the token grid covers."""
    image = np.asarray(image)
    H, W = image.shape[:2]
    side = crop_fraction * min(H, W)
    top, left = (H - side) / 2, (W - side) / 2
    rows = slice(int(np.floor(top)), int(np.ceil(top + side)))
    cols = slice(int(np.floor(left)), int(np.ceil(left + side)))
    return image[rows, cols]


def foreground_tokens(images, grid: tuple[int, int], crop_fraction: float = 1.0,
                      threshold: float = 0.1, coverage: float = 0.5) -> np.ndarray:
    """(n, s) bool: token (r, q) is foreground when at least ``coverage`` of the pixels it
    covers are brighter than ``threshold`` × 255 (grey, or the mean of RGB), in the part of
    the image the backbone sees (:func:`backbone_view`)."""
    h, w = grid
    out = []
    for image in images:
        view = backbone_view(np.asarray(image, dtype=np.float64), crop_fraction)
        if view.ndim == 3:
            view = view.mean(2)
        bright = view > threshold * 255
        H, W = bright.shape
        r_edges = np.linspace(0, H, h + 1)
        q_edges = np.linspace(0, W, w + 1)
        cells = np.zeros((h, w))
        for r in range(h):
            for q in range(w):
                # pixel centres inside the cell (a pixel belongs to the cell of its centre)
                ys = np.flatnonzero((np.arange(H) + 0.5 >= r_edges[r])
                                    & (np.arange(H) + 0.5 < r_edges[r + 1]))
                xs = np.flatnonzero((np.arange(W) + 0.5 >= q_edges[q])
                                    & (np.arange(W) + 0.5 < q_edges[q + 1]))
                cells[r, q] = bright[np.ix_(ys, xs)].mean() if ys.size and xs.size else 0.0
        out.append(cells.reshape(-1) >= coverage)
    return np.stack(out)


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else np.nan


def top_k_jaccard(scores, foreground) -> np.ndarray:
    """Jaccard index of the k highest-scoring tokens (k = the foreground's size) with the
    foreground, per image (n,); NaN for an image without foreground. Ties break by token
    order."""
    scores, foreground = np.asarray(scores), np.asarray(foreground, dtype=bool)
    out = np.full(len(scores), np.nan)
    for i, (row, mask) in enumerate(zip(scores, foreground)):
        k = int(mask.sum())
        if k:
            top = np.zeros_like(mask)
            top[np.argsort(-row, kind="stable")[:k]] = True
            out[i] = _jaccard(top, mask)
    return out


def cluster_jaccard(labels, foreground) -> np.ndarray:
    """The best Jaccard index of any one cluster with the foreground, per image (n,)."""
    labels, foreground = np.asarray(labels), np.asarray(foreground, dtype=bool)
    out = np.full(len(labels), np.nan)
    for i, (row, mask) in enumerate(zip(labels, foreground)):
        if mask.any():
            out[i] = max(_jaccard(row == k, mask) for k in np.unique(row))
    return out
