"""Figures of the explanations, drawn with matplotlib's object API (``Figure``, no pyplot): the
user's backend and global state are never touched.

- :func:`explanation_figure`: one image as the backbone saw it, its predicted and true class;
  the exact token contributions of the predicted class on the image; the token clusters; the
  pair contributions from every source token to one query token.
- :func:`spectrum_figure`: the singular values of every block (and, for attention, the d×d map
  of block norms).
- :func:`rank_path_figure`: the heads Σ_g rank Z_g against β along a path.
- :func:`save_png`: a figure written atomically as PNG.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..files import write_atomic
from ..solvers.solution import block_ranks
from .faithfulness import backbone_view

__all__ = ["explanation_figure", "spectrum_figure", "rank_path_figure", "save_png",
           "png_bytes"]

_CLUSTER_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                   "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def png_bytes(figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_png(figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write the figure to ``path`` as PNG, atomically; returns the path."""
    return write_atomic(path, png_bytes(figure, dpi))


def _show_image(ax, view: np.ndarray) -> tuple[float, float]:
    """Draw the image (grey or RGB uint8) without axes; returns its (height, width)."""
    if view.ndim == 2:
        ax.imshow(view, cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(view)
    ax.set_xticks([])
    ax.set_yticks([])
    return view.shape[0], view.shape[1]


def _overlay(ax, values: np.ndarray, size: tuple[float, float], **kwargs):
    """Token-grid values (h, w) drawn over the image, one block per token (no smoothing: each
    block is exactly one token's value)."""
    H, W = size
    return ax.imshow(values, extent=(-0.5, W - 0.5, H - 0.5, -0.5), interpolation="nearest",
                     **kwargs)


def _token_box(ax, token: int, grid: tuple[int, int], size: tuple[float, float]):
    from matplotlib.patches import Rectangle

    h, w = grid
    H, W = size
    r, q = divmod(token, w)
    ax.add_patch(Rectangle((q * W / w - 0.5, r * H / h - 0.5), W / w, H / h, fill=False,
                           edgecolor="black", linewidth=2))


def explanation_figure(image: np.ndarray, grid: tuple[int, int], contributions: np.ndarray,
                       labels: np.ndarray, query_map: np.ndarray, query: int,
                       predicted: str, true: str, crop_fraction: float = 1.0,
                       title: str | None = None):
    """Four panels for one image.

    ``contributions`` (s,): each token's exact share of the predicted class's logit (they sum
    to the logit minus the intercept);
    ``labels`` (s,): the token clusters; ``query_map`` (s,): the pair contributions C[query, t]
    of every source token t to the predicted class at token ``query``.
    """
    h, w = grid
    view = backbone_view(np.asarray(image), crop_fraction)
    figure = _figure(13, 3.6)
    axes = figure.subplots(1, 4)
    size = _show_image(axes[0], view)
    axes[0].set_title(f"predicted: {predicted}\ntrue: {true}", fontsize=9)

    _show_image(axes[1], view)
    limit = float(np.abs(contributions).max()) or 1.0
    shown = _overlay(axes[1], contributions.reshape(h, w), size, cmap="RdBu_r", vmin=-limit,
                     vmax=limit, alpha=0.65)
    figure.colorbar(shown, ax=axes[1], shrink=0.8, label="share of the logit")
    axes[1].set_title(f"token shares of the '{predicted}' logit\n(exact: Σ shares + b = "
                      "logit)", fontsize=9)

    _show_image(axes[2], view)
    k = int(labels.max()) + 1
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colors = [_CLUSTER_COLORS[j % len(_CLUSTER_COLORS)] for j in range(k)]
    _overlay(axes[2], labels.reshape(h, w), size, cmap=ListedColormap(colors), vmin=-0.5,
             vmax=k - 0.5, alpha=0.55)
    counts = np.bincount(labels, minlength=k)
    axes[2].legend(handles=[Patch(color=colors[j], label=f"{j}: {counts[j]} tokens")
                            for j in range(k)], fontsize=7, loc="upper left",
                   bbox_to_anchor=(1.0, 1.0), title="cluster", title_fontsize=7)
    axes[2].set_title(f"token clusters ({k})\nthe head's own similarity", fontsize=9)

    _show_image(axes[3], view)
    limit = float(np.abs(query_map).max()) or 1.0
    shown = _overlay(axes[3], query_map.reshape(h, w), size, cmap="PuOr_r", vmin=-limit,
                     vmax=limit, alpha=0.65)
    _token_box(axes[3], query, grid, size)
    figure.colorbar(shown, ax=axes[3], shrink=0.8, label="C[query, t]")
    axes[3].set_title(f"what each token t adds to\ntoken {query} (boxed), '{predicted}'",
                      fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def spectrum_figure(sigma: np.ndarray, norms: np.ndarray | None = None,
                    title: str | None = None):
    """Singular values of every block (log scale; one line per block), and when ``norms``
    (d, d) is given the map of attention block norms ‖Z^{(k,l)}‖_F beside it."""
    sigma = np.asarray(sigma, dtype=np.float64)
    figure = _figure(10 if norms is not None else 5.5, 3.8)
    axes = figure.subplots(1, 2 if norms is not None else 1)
    ax = axes[0] if norms is not None else axes
    ranks = block_ranks(torch.as_tensor(sigma)).tolist()
    for g, (row, rank) in enumerate(zip(sigma, ranks)):
        kept = row[:rank]  # σ descending: the nonzero ones
        ax.plot(np.arange(1, len(kept) + 1), kept, marker="o", markersize=3, linewidth=1,
                label=f"block {g}" if len(sigma) <= 10 else None)
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("σ_i(Z_g)")
    ax.set_title(f"singular values of the blocks (ranks {', '.join(map(str, ranks[:8]))}"
                 f"{', …' if len(ranks) > 8 else ''})", fontsize=9)
    if 1 < len(sigma) <= 10:
        ax.legend(fontsize=7)
    if norms is not None:
        shown = axes[1].imshow(norms, cmap="viridis")
        figure.colorbar(shown, ax=axes[1], shrink=0.8)
        axes[1].set_xlabel("l (row of W2)")
        axes[1].set_ylabel("k (column of W1)")
        axes[1].set_title("‖Z^(k,l)‖_F: which feature pairs interact", fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def rank_path_figure(path: Sequence[dict], title: str | None = None):
    """Σ_g rank Z_g (the network's heads) against β (log scale), from :func:`rank_path`."""
    figure = _figure(5.5, 3.6)
    ax = figure.subplots()
    betas = [p["beta"] for p in path]
    heads = [p["heads"] for p in path]
    ax.plot(betas, heads, marker="o")
    for b, r in zip(betas, heads):
        ax.annotate(str(r), (b, r), textcoords="offset points", xytext=(0, 5), fontsize=7,
                    ha="center")
    ax.set_xscale("log")
    ax.invert_xaxis()  # the path runs from large β to small
    ax.set_xlabel("β")
    ax.set_ylabel("heads Σ_g rank Z_g")
    ax.set_title(title or "rank of the optimum along the β path", fontsize=9)
    return figure
