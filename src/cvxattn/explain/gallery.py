"""An explained model on real images: figures, faithfulness numbers and a static HTML page.

:func:`measure` runs the faithfulness protocol of :mod:`~cvxattn.explain.faithfulness` on one
model; :func:`write_gallery` writes, into one folder, a figure per chosen image, the spectrum
(and rank path when given), ``explain.json`` with every number, and ``index.html`` that lays
them out (no server, no scripts: open it in a browser). Every file is written atomically.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..files import write_atomic
from ..heads.attention import SelfAttention
from ..report import write_json
from .attributions import checked_tokens, fitted, pair_contributions, token_contributions
from .clusters import token_clusters
from .faithfulness import (cluster_jaccard, deletion_auc, deletion_logits, foreground_tokens,
                           gradient_times_input, random_orders, target_curves, top_k_jaccard)
from .figures import explanation_figure, rank_path_figure, save_png, spectrum_figure
from .structure import block_norms, spectrum

__all__ = ["measure", "score_methods", "write_gallery", "crop_fraction_of", "summarize"]

METHODS = ("exact (Shapley)", "exact (output)", "exact (source)", "gradient × input", "random")


def crop_fraction_of(manifest: dict | None) -> float:
    """The part of min(H, W) that a token cache's backbone kept by its center crop: S / (S +
    crop_padding) for EfficientNet-Lite; 1 when the manifest does not say."""
    try:
        backbone = manifest["request"]["backbone"]
        padding = backbone["description"]["preprocessing"]["crop_padding"]
        size = backbone["image_size"]
        return float(size) / (float(size) + float(padding))
    except (KeyError, TypeError, ValueError):
        return 1.0


def summarize(values: np.ndarray) -> dict:
    """Mean, standard error and count of the finite values."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return {"mean": None, "sem": None, "n": 0}
    sem = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else 0.0
    return {"mean": float(values.mean()), "sem": sem, "n": int(values.size)}


def _scores(model, X, target, reference) -> dict[str, np.ndarray]:
    """Each method's per-token score for the target class, (n, s)."""
    model = fitted(model)
    n, s, _ = X.shape
    rows = torch.arange(n)
    out = {}
    for role in ("shapley", "output", "source"):
        T = token_contributions(model, X, role)  # (n, s, c)
        name = "Shapley" if role == "shapley" else role
        out[f"exact ({name})"] = T[rows, :, torch.as_tensor(target)].double().numpy()
    out["gradient × input"] = gradient_times_input(model.logits, X, target, reference)
    return out


def measure(model, X, reference, images=None, grid=None, crop_fraction: float = 1.0,
            max_clusters: int = 6, seed: int = 0) -> dict:
    """Faithfulness of the exact contributions of a fitted head (every role), gradient ×
    input and a random order, for the predicted class (:func:`score_methods`). With a zero
    reference (the training-mean token of standardized tokens), gradient × input equals the
    source role exactly for every head that is linear in X at fixed gates (all but
    attention): not an independent explanation there, but a check. With
    ``images`` (and the token ``grid``) also the best cluster's foreground Jaccard index, and
    that of the same clusters with their tokens shuffled (what the best match gives by
    chance)."""
    model = fitted(model)
    X = checked_tokens(model, X)
    with torch.no_grad():
        target = model.logits(X).argmax(1).numpy()
    reference = torch.as_tensor(reference, dtype=X.dtype)
    scores = _scores(model, X, target, reference)
    scores["random"] = None
    foreground = None if images is None else foreground_tokens(images, grid, crop_fraction)
    result = score_methods(model.logits, X, target, scores, reference, foreground, seed)
    if foreground is not None:
        clusters = token_clusters(model, X, max_clusters=min(max_clusters, X.shape[1]),
                                  seed=seed)
        rng = np.random.default_rng(seed)
        shuffled = np.stack([rng.permutation(row) for row in clusters.labels])
        result["clusters"] = {"jaccard": summarize(cluster_jaccard(clusters.labels,
                                                                   foreground)),
                              "random_jaccard": summarize(cluster_jaccard(shuffled,
                                                                          foreground)),
                              "n_clusters": summarize(clusters.n_clusters)}
    return result


def score_methods(logits, X, target, scores: dict, reference, foreground=None,
                  seed: int = 0) -> dict:
    """Deletion and localisation of several explanations of one model.

    ``logits``: tokens (m, s, d) → logits (m, c); ``target`` (n,) the explained class;
    ``scores``: name → per-token scores (n, s) for that class (higher = more important), or
    None for a random order from ``seed``; ``foreground`` (n, s) bool or None.

    For each method: the deletion AUC, the area under the target's softmax probability as
    tokens are replaced by ``reference`` in the method's order (RISE's measure, in [0, 1];
    lower is better; across models it also reflects each model's confidence, so compare it
    with the same model's random order too), mean ± standard error over images;
    ``logit_auc_median``, the median area under the normalized logit curve (the median:
    when deleting every token barely moves the logit, the normalization divides by nearly
    zero and single images reach ±10); the mean probability curve; and with a foreground
    the Jaccard index of the top-k tokens (k = the foreground's size).
    """
    n, s = np.asarray(target).shape[0], X.shape[1]
    result = {"n_images": n, "methods": {}}
    if foreground is not None:
        result["foreground_tokens"] = summarize(np.asarray(foreground).sum(1))
    for name, score in scores.items():
        if score is None:
            order = random_orders(n, s, seed)
            score = -np.argsort(order, 1).astype(np.float64)  # earlier in the order = higher
        else:
            score = np.asarray(score, dtype=np.float64)
            order = np.argsort(-score, 1, kind="stable")
        outputs = deletion_logits(logits, X, order, reference)  # (n, s + 1, c)
        curves = target_curves(outputs, target, probability=True)
        normalized = deletion_auc(target_curves(outputs, target))
        entry = {"deletion_auc": summarize(deletion_auc(curves, normalize=False)),
                 "logit_auc_median": float(np.nanmedian(normalized)),
                 "curve": curves.mean(0).tolist()}
        if foreground is not None:
            entry["jaccard"] = summarize(top_k_jaccard(score, foreground))
        result["methods"][name] = entry
    return result


def _describe(model) -> list[tuple[str, str]]:
    """(label, value) lines about a Solution or a loaded model, for the page."""
    lines = [("head", repr(fitted(model).head))]
    for name in ("objective", "lower_bound", "gap", "status", "method"):
        value = getattr(model, name, None)
        if value is None and isinstance(getattr(model, "certificate", None), dict):
            value = model.certificate.get(name)
        if value is not None:
            lines.append((name.replace("_", " "), f"{value:.6g}" if isinstance(value, float)
                          else str(value)))
    problem = getattr(model, "problem", None)  # a loaded model keeps its problem's settings
    beta = problem.get("beta") if isinstance(problem, dict) else getattr(model, "beta", None)
    if beta is not None:
        lines.insert(1, ("β", f"{beta:g}"))
    return lines


def _faithfulness_table(numbers: dict) -> str:
    def cell(entry):
        if not entry or entry.get("mean") is None:
            return "—"
        return f"{entry['mean']:.3f} ± {entry['sem']:.3f}"

    rows = [f"<tr><td>{html.escape(name)}</td><td>{cell(entry['deletion_auc'])}</td>"
            f"<td>{cell(entry.get('jaccard'))}</td></tr>"
            for name, entry in numbers["methods"].items()]
    if "clusters" in numbers:
        for label, key in (("best cluster", "jaccard"),
                           ("best cluster, tokens shuffled", "random_jaccard")):
            rows.append(f"<tr><td>{label}</td><td>—</td>"
                        f"<td>{cell(numbers['clusters'][key])}</td></tr>")
    return ("<table><tr><th>explanation</th><th>deletion AUC of the class probability (lower "
            "is better)</th><th>foreground Jaccard, top-k tokens (higher is better)</th></tr>"
            + "".join(rows) + "</table>")


def write_gallery(out: str | os.PathLike, model, X, images: Sequence[np.ndarray],
                  labels: Sequence[int], classes: Sequence[str], grid: tuple[int, int],
                  indices: Sequence[int] | None = None, crop_fraction: float = 1.0,
                  max_clusters: int = 6, seed: int = 0, numbers: dict | None = None,
                  path: Sequence[dict] | None = None, title: str = "cvxattn explain",
                  notes: Sequence[str] = ()) -> Path:
    """Explain ``model`` on the images ``indices`` of ``X`` (n, s, d) (default: the first 8)
    and write the gallery to ``out``; returns the path of index.html.

    ``images`` (n,) are the pictures the tokens came from, ``labels`` (n,) their true
    classes, ``classes`` the class names; ``numbers`` the result of :func:`measure`, ``path``
    of :func:`~cvxattn.explain.rank_path`, shown when given.
    """
    model_view = fitted(model)
    X = checked_tokens(model_view, X)
    n, s, _ = X.shape
    if len(images) != n or len(labels) != n:
        raise ValueError(f"images, labels: expected one per sample of X ({n}), got "
                         f"{len(images)} images and {len(labels)} labels")
    indices = list(range(min(8, n))) if indices is None else [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < n]
    if bad or not indices:
        raise ValueError(f"indices: expected image indices in [0, {n}), got {bad or indices}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = X[indices]
    with torch.no_grad():
        logits = model_view.logits(chosen)  # (k, c)
    predicted = logits.argmax(1)
    T = token_contributions(model_view, chosen, "shapley")  # (k, s, c)
    C = pair_contributions(model_view, chosen)  # (k, s, s, c)
    clusters = token_clusters(model_view, chosen, max_clusters=min(max_clusters, s), seed=seed)
    items = []
    for k, index in enumerate(indices):
        p = int(predicted[k])
        share = (T[k, :, p] / s).double().numpy()  # Σ_t share + b_p = logit p
        query = int(np.argmax(share))
        query_map = (C[k, query, :, p] / s).double().numpy()
        figure = explanation_figure(images[index], grid, share, clusters.labels[k], query_map,
                                    query, classes[p], classes[int(labels[index])],
                                    crop_fraction, title=f"image {index}")
        name = f"image-{index}.png"
        save_png(figure, out / name)
        items.append({"index": index, "figure": name, "true": classes[int(labels[index])],
                      "predicted": classes[p], "logit": float(logits[k, p]),
                      "intercept": float(model_view.intercept[p]),
                      "share": share.tolist(), "query": query,
                      "clusters": clusters.labels[k].tolist(),
                      "n_clusters": int(clusters.n_clusters[k])})
    sigma = spectrum(model_view).double().numpy()
    norms = None
    if isinstance(model_view.head, SelfAttention):
        norms = block_norms(model_view).double().pow(2).sum(0).sqrt().numpy()
    save_png(spectrum_figure(sigma, norms), out / "spectrum.png")
    figures = ["spectrum.png"]
    if path:
        save_png(rank_path_figure(path), out / "rank-path.png")
        figures.append("rank-path.png")
    write_json(out / "explain.json", {"model": dict(_describe(model)), "images": items,
                                      "spectrum": sigma.tolist(), "path": list(path or []),
                                      "faithfulness": numbers, "notes": list(notes)})
    return write_atomic(out / "index.html", _page(title, model, items, figures, numbers, notes))


def _page(title, model, items, figures, numbers, notes) -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1400px;margin:auto;padding:1em}"
             "img{max-width:100%;border:1px solid #ccc}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
             "figure{margin:1.5em 0}</style></head><body>", f"<h1>{esc(title)}</h1>",
             "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>"
                                 for k, v in _describe(model)) + "</table>",
             "<p>Every number below is exact: with mean pooling the logit of class k is "
             "(1/s) Σ<sub>a</sub> O[a, k] + b<sub>k</sub>, and the token outputs O are linear "
             "in the convex blocks, so each token's share and each pair's share add up to the "
             "logit with no approximation.</p>"]
    parts += [f"<p>{esc(note)}</p>" for note in notes]
    if numbers:
        parts.append(f"<h2>Faithfulness on {numbers['n_images']} images</h2>")
        parts.append(_faithfulness_table(numbers))
    parts.append("<h2>Images</h2>")
    for item in items:
        total = sum(item["share"]) + item["intercept"]
        parts.append(f"<figure><img src='{esc(item['figure'])}' alt='image {item['index']}'>"
                     f"<figcaption>image {item['index']}: true {esc(item['true'])}, predicted "
                     f"{esc(item['predicted'])} (logit {item['logit']:.4f} = Σ shares "
                     f"{sum(item['share']):.4f} + intercept {item['intercept']:.4f} → "
                     f"{total:.4f}); {item['n_clusters']} clusters</figcaption></figure>")
    parts.append("<h2>Structure of the optimum</h2>")
    parts += [f"<figure><img src='{esc(name)}' alt='{esc(name)}'></figure>" for name in figures]
    parts.append("</body></html>\n")
    return "\n".join(parts)

