"""Suite ``explain``: faithfulness of cvxattn's exact explanations against a softmax head's.

Data: the main job's tokens (``cvxattn run``'s defaults: 2,000 training and 1,000 test
Fashion-MNIST images, 7×7 tokens of d = 10 features from EfficientNet-Lite0, read from the
token cache, standardized as ``cvxattn table`` does), and the test images they came from.
With ``--quick``: planted synthetic tokens, no images.

Models, fitted exactly as the main job's table fits them:

- each convex program of ``--heads`` (default: all ten), by ``cvxattn.protocol.fit_convex``:
  β picked on the validation split, refitted on the training set, certified to gap 1e-3;
- the softmax multi-head self-attention baseline (5 heads), AdamW on the fit part, the epoch
  of best validation accuracy kept.

Measures, on the first ``--n-eval`` test images (the same for every model), always for the
class each model predicts (``cvxattn.explain.faithfulness``):

- deletion: tokens replaced by the training-mean token one at a time in each explanation's
  order; the deletion AUC is the area under the predicted class's softmax probability
  (mean ± sem over images; lower is better), with the median area under the per-image
  normalized logit curve beside it;
- localisation: the Jaccard index of the top-k tokens with the image's foreground tokens
  (k = the foreground's size), and for the convex heads the best token cluster's Jaccard
  against the same clusters with their tokens shuffled.

Explanations: the convex heads' exact token contributions (Shapley, output and source roles),
gradient × input and a random order; for the softmax head the attention map (attention
received, averaged over heads and queries), attention rollout (one layer, no residual:
½(Ā + I), whose received attention is ½ · the attention map + 1/(2s), so its order is the
attention map's — computed anyway and checked), gradient × input and a random order.

Summary: the best convex attention-type head (attention, Mixer, FNO, B-FNO; highest
validation accuracy): its "exact (Shapley)" deletion AUC divided by each softmax explanation's
(< 1: ours is more faithful), its Jaccard against random, and a warm-started β path on the
training set (ranks of the optimum); ``--figures DIR`` writes rank-path.png and spectrum.png.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from cvxattn.explain.gallery import METHODS

from .common import (Column, bfno_groups, check_positive, fill_defaults, fmt_ratio,
                     parse_programs, planted_data, print_table, ratio)

ATTENTION_TYPE = ("attention", "mixer", "fno", "bfno")
CONVEX_METHODS = METHODS  # exact (Shapley, output, source), gradient × input, random
SOFTMAX_METHODS = ("attention map", "attention rollout", "gradient × input", "random")
OURS = "exact (Shapley)"
SOFTMAX = "attention (softmax)"


def add_arguments(parser) -> None:
    parser.add_argument("--heads", nargs="+", metavar="PROGRAM",
                        help="convex programs (default: all ten; attention-linear and "
                             "mlp-gated with --quick)")
    parser.add_argument("--n-eval", type=int, help="explain the first N test images "
                        "(default 500; all 40 synthetic ones with --quick)")
    parser.add_argument("--max-clusters", type=int, default=6,
                        help="most token clusters per image (default 6)")
    parser.add_argument("--path-betas", type=float, nargs="*",
                        help="β of the warm-started path of the best attention-type head, "
                             "largest first (default 1e-1 3e-2 1e-2 3e-3 1e-3; 1e-1 1e-2 "
                             "with --quick; none to skip)")
    parser.add_argument("--path-tol", type=float, default=1e-2,
                        help="relative duality gap of the path solves (default 1e-2)")
    parser.add_argument("--epochs", type=int, help="AdamW epochs of the softmax baseline "
                        "(default 50, as the main job; 2 with --quick)")
    parser.add_argument("--figures", metavar="DIR", help="write rank-path.png and "
                        "spectrum.png of the best attention-type head here (default: none)")


def resolve(args) -> None:
    fill_defaults(args, heads=(["attention-linear", "mlp-gated"], None), n_eval=(40, 500),
                  path_betas=([1e-1, 1e-2], [1e-1, 3e-2, 1e-2, 3e-3, 1e-3]),
                  epochs=(2, 50))
    parse_programs(args.heads)  # ValueError naming --heads
    check_positive(args, "n_eval", "max_clusters", "path_tol", "epochs")
    if args.path_betas:
        check_positive(args, "path_betas")
    args.path_betas = sorted(set(args.path_betas), reverse=True)


# ------------------------------------------------------------------------------------ data
def _synthetic(args):
    """Planted tokens on a 3×3 grid (s = 9, d = 4, c = 3), 150 training and 40 test samples,
    with the main job's validation split; no images."""
    from cvxattn.protocol import stratified_subset
    from cvxattn.table import TableData

    X, y = planted_data(190, 9, 4, 3, heads=3, activation="gated", seed=args.seed)
    y = y.astype(np.int64)
    index = np.arange(150)
    fit_mask = ~np.isin(index, stratified_subset(index, y[:150], 30, args.seed + 2))
    data = TableData(X[:150], y[:150], X[150:], y[150:], fit_mask, (3, 3), ("a", "b", "c"),
                     np.zeros(4), np.ones(4))
    return data, None, 1.0, "planted synthetic tokens (s = 9, d = 4, c = 3)"


def _real(args):
    from cvxattn.explain.gallery import crop_fraction_of
    from cvxattn.pipeline import RunConfig, extract_features, load_images
    from cvxattn.table import prepare

    config = RunConfig(seed=args.seed)
    train, _ = extract_features(config.features("train"), progress=False)
    test, _ = extract_features(config.features("test"), progress=False)
    data = prepare(config, train, test)
    images = load_images(config.dataset, "test").images[np.asarray(test.indices)]
    source = (f"{config.dataset} tokens of efficientnet-lite0 ({len(data.y_train)} train, "
              f"{len(data.y_test)} test, seed {config.seed}, {data.grid[0]}×{data.grid[1]} "
              f"tokens of d = {data.X_train.shape[2]})")
    return data, images, crop_fraction_of(test.manifest), source


def _config(args):
    from cvxattn.pipeline import RunConfig
    from cvxattn.table import DEFAULT_GATES

    config = RunConfig(seed=args.seed)
    gates = {k: 2 for k in DEFAULT_GATES} if args.quick else dict(config.n_gates)
    return config, gates


# ---------------------------------------------------------------------------------- models
def fit_program(args, config, gates, data, name: str, activation: str):
    """The main job's fit of one convex program: its table row and certified solution."""
    from cvxattn.heads import create
    from cvxattn.protocol import fit_convex

    d = data.X_train.shape[2]
    groups = config.bfno_groups if not args.quick else bfno_groups(d, data.n_classes)
    head = create(name, activation, gates[name], args.seed, data.grid, groups)
    start = time.perf_counter()
    row, solution = fit_convex(head, data, config.beta, config.tol, config.select_tol,
                               config.max_iter, n_classes=data.n_classes)
    return row, solution, time.perf_counter() - start


def fit_softmax(args, config, gates, data):
    """The main job's softmax-attention baseline (table.fit_adamw_baseline), the model kept."""
    from cvxattn.baselines import SoftmaxAttentionHead, accuracy, train_adamw

    d = data.X_train.shape[2]

    def tensors(mask):
        return (torch.from_numpy(np.ascontiguousarray(data.X_train[mask])),
                torch.from_numpy(data.y_train[mask].astype(np.int64)))

    from cvxattn.protocol import choose_on_grid

    def evaluate(lr, decay):  # the main job's grid, picked on validation as the table does
        model = SoftmaxAttentionHead(d, data.n_classes, n_heads=gates["attention"],
                                     seed=args.seed, dtype=torch.float32)
        result = train_adamw(model, *tensors(data.fit_mask), lr=lr, epochs=args.epochs,
                             weight_decay=decay, seed=args.seed,
                             validation=tensors(~data.fit_mask))
        return result.val_acc, result

    start = time.perf_counter()
    choice = choose_on_grid({"lr": config.lr, "decay": config.adamw_decay}, evaluate,
                            extensions=0, prefer={"lr": -1})
    result, model = choice.result, choice.result.model
    seconds = time.perf_counter() - start
    X_test = torch.from_numpy(data.X_test)
    y_test = torch.from_numpy(data.y_test.astype(np.int64))
    model.eval()
    return model, {"val_acc": result.val_acc, "test_acc": accuracy(model, X_test, y_test),
                   "best_epoch": result.best_epoch, "epochs": args.epochs,
                   "fit_seconds": seconds}


def softmax_scores(model, X: torch.Tensor, target: np.ndarray, reference: torch.Tensor
                   ) -> tuple[dict, dict]:
    """The explanations people use for one softmax-attention layer, per token (n, s), and a
    check that rollout orders the tokens as the attention map does."""
    from cvxattn.explain.faithfulness import gradient_times_input

    s = X.shape[1]
    with torch.no_grad():
        A = model.attention(X)  # (n, h, s, s): row a = query a's weights over the keys
        received = A.mean((1, 2))  # attention each key token receives, (n, s)
        # rollout of one layer without a residual connection: ½(Ā + I), Ā the head mean
        rollout = (0.5 * (A.mean(1) + torch.eye(s, dtype=A.dtype))).mean(1)  # (n, s)
    scores = {"attention map": received.double().numpy(),
              "attention rollout": rollout.double().numpy(),
              "gradient × input": gradient_times_input(model, X, target, reference),
              "random": None}
    same = np.all(np.argsort(-scores["attention map"], 1, kind="stable")
                  == np.argsort(-scores["attention rollout"], 1, kind="stable"), 1)
    affine = float(np.abs(scores["attention rollout"] - (0.5 * scores["attention map"]
                                                         + 0.5 / s)).max())
    return scores, {"rollout_same_order_fraction": float(same.mean()),
                    "rollout_minus_affine_max_abs": affine}


# ------------------------------------------------------------------------------------ run
def _mean(entry: dict | None) -> float | None:
    return None if not entry else entry.get("mean")


def _z(a: dict | None, b: dict | None) -> float | None:
    """(mean a − mean b) / √(sem a² + sem b²): an unpaired z-score of a difference."""
    if not a or not b or a.get("mean") is None or b.get("mean") is None:
        return None
    scale = math.hypot(a["sem"], b["sem"])
    return (a["mean"] - b["mean"]) / scale if scale > 0 else None


def _within_ratios(numbers: dict, ours: str) -> dict:
    methods = numbers["methods"]
    return {f"{ours} / {other}": ratio(_mean(methods[ours]["deletion_auc"]),
                                       _mean(methods[other]["deletion_auc"]))
            for other in methods if other != ours}


def run_path(args, data, solution) -> dict:
    """Warm-started β path of one head on the training set, largest β first."""
    import cvxattn as ca
    from cvxattn.explain import rank_path

    problem = ca.Problem(solution.head, data.X_train, data.y_train, beta=args.path_betas[0],
                         n_classes=data.n_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ca.ConvergenceWarning)  # the status says it
        found = ca.solve_path(problem, args.path_betas, tol=args.path_tol)
    path = rank_path(found.solutions)
    for entry, s in zip(path, found.seconds):
        entry["seconds"] = s
        print(f"  path β={entry['beta']:g}: {entry['heads']} heads, gap {entry['gap']:.1e} "
              f"({entry['status']}), {s:.1f} s", flush=True)
    return {"betas": list(found.betas), "tol": args.path_tol, "path": path,
            "seconds": float(sum(found.seconds))}


def write_figures(args, program: str, solution, path: list | None) -> dict:
    from cvxattn.explain import block_norms, spectrum
    from cvxattn.explain.figures import rank_path_figure, save_png, spectrum_figure
    from cvxattn.heads.attention import SelfAttention

    start = time.perf_counter()
    out = Path(args.figures)
    out.mkdir(parents=True, exist_ok=True)
    sigma = spectrum(solution).double().numpy()
    norms = None
    if isinstance(solution.head, SelfAttention):
        norms = block_norms(solution).double().pow(2).sum(0).sqrt().numpy()  # over blocks
    beta = solution.beta
    written = [str(save_png(spectrum_figure(sigma, norms, title=f"{program}, β = {beta:g} "
                                            "(picked on validation)"),
                            out / "spectrum.png"))]
    if path:
        written.append(str(save_png(rank_path_figure(
            path, title=f"{program}: heads Σ_g rank Z_g along a warm-started β path"),
            out / "rank-path.png")))
    return {"files": written, "seconds": time.perf_counter() - start}


def run(args) -> dict:
    from cvxattn.explain import measure
    from cvxattn.explain.faithfulness import foreground_tokens
    from cvxattn.explain.gallery import score_methods

    seconds = {}
    start = time.perf_counter()
    data, images, crop, source = _synthetic(args) if args.quick else _real(args)
    config, gates = _config(args)
    seconds["data"] = time.perf_counter() - start
    n_eval = min(args.n_eval, len(data.y_test))
    X_eval = data.X_test[:n_eval]
    y_eval = data.y_test[:n_eval]
    images_eval = None if images is None else images[:n_eval]
    d = data.X_train.shape[2]
    reference = data.X_train.reshape(-1, d).astype(np.float64).mean(0)  # training-mean token
    foreground = None if images_eval is None else foreground_tokens(images_eval, data.grid,
                                                                    crop)
    print(f"explain: {source}; explaining the first {n_eval} test images", flush=True)

    rows, solutions = [], {}
    for name, activation in parse_programs(args.heads):
        program = f"{name}-{activation}"
        fitted, solution, fit_seconds = fit_program(args, config, gates, data, name,
                                                    activation)
        start = time.perf_counter()
        numbers = measure(solution, X_eval, reference, images_eval, data.grid, crop,
                          max_clusters=args.max_clusters, seed=args.seed)
        measure_seconds = time.perf_counter() - start
        predicted = solution.predict(X_eval).cpu().numpy()
        solutions[program] = solution
        rows.append({"model": program, "head": name, "activation": activation,
                     "kind": "convex", "beta": fitted["beta"], "val_acc": fitted["val_acc"],
                     "test_acc": fitted["test_acc"], "gap": fitted["gap"],
                     "status": fitted["status"], "n_heads": fitted["heads"],
                     "eval_acc": float((predicted == y_eval).mean()),
                     "fit_seconds": fit_seconds, "measure_seconds": measure_seconds,
                     "faithfulness": numbers, "ratios": _within_ratios(numbers, OURS)})
        auc = numbers["methods"][OURS]["deletion_auc"]
        print(f"  {program}: val {100 * (fitted['val_acc'] or 0):.2f}% test "
              f"{100 * fitted['test_acc']:.2f}%, {OURS} deletion AUC {auc['mean']:.4f} ± "
              f"{auc['sem']:.4f}; fit {fit_seconds:.1f} s, measure {measure_seconds:.1f} s",
              flush=True)

    model, trained = fit_softmax(args, config, gates, data)
    start = time.perf_counter()
    X_t = torch.from_numpy(np.ascontiguousarray(X_eval))
    with torch.no_grad():
        target = model(X_t).argmax(1).numpy()
    reference_t = torch.as_tensor(reference, dtype=X_t.dtype)
    scores, rollout_check = softmax_scores(model, X_t, target, reference_t)
    numbers = score_methods(model, X_t, target, scores, reference_t, foreground, args.seed)
    measure_seconds = time.perf_counter() - start
    rows.append({"model": SOFTMAX, "head": "attention", "activation": "softmax",
                 "kind": "baseline", **{k: trained[k] for k in ("val_acc", "test_acc")},
                 "best_epoch": trained["best_epoch"], "epochs": trained["epochs"],
                 "eval_acc": float((target == y_eval).mean()),
                 "fit_seconds": trained["fit_seconds"], "measure_seconds": measure_seconds,
                 "faithfulness": numbers, "rollout_check": rollout_check,
                 "ratios": _within_ratios(numbers, "attention map")})
    print(f"  {SOFTMAX}: val {100 * trained['val_acc']:.2f}% test "
          f"{100 * trained['test_acc']:.2f}%; fit {trained['fit_seconds']:.1f} s, measure "
          f"{measure_seconds:.1f} s", flush=True)

    summary = {"source": source, "n_eval": n_eval, "crop_fraction": crop,
               "reference": "training-mean token", "gates": gates,
               "betas": list(config.beta), "tol": config.tol,
               "foreground_tokens": None if foreground is None
               else numbers.get("foreground_tokens"),
               "best": None, "path": None, "figures": None, "seconds": seconds}
    candidates = [r for r in rows if r["kind"] == "convex" and r["head"] in ATTENTION_TYPE]
    if candidates:
        best = max(candidates, key=lambda r: (r["val_acc"] or 0.0, -rows.index(r)))
        summary["best"] = _best_summary(best, rows[-1])
        solution = solutions[best["model"]]
        if args.path_betas:
            start = time.perf_counter()
            summary["path"] = run_path(args, data, solution)
            seconds["path"] = time.perf_counter() - start
        if args.figures:
            summary["figures"] = write_figures(
                args, best["model"], solution,
                summary["path"]["path"] if summary["path"] else None)
            seconds["figures"] = summary["figures"]["seconds"]
    seconds["fits"] = sum(r["fit_seconds"] for r in rows)
    seconds["measures"] = sum(r["measure_seconds"] for r in rows)
    return {"rows": rows, "summary": summary}


def _best_summary(best: dict, softmax: dict) -> dict:
    """The best attention-type head's exact contributions against every softmax
    explanation: deletion AUC ratios (< 1: ours lower, more faithful) and Jaccard."""
    ours = best["faithfulness"]["methods"][OURS]
    own_random = best["faithfulness"]["methods"]["random"]
    theirs = softmax["faithfulness"]["methods"]
    comparisons = {}
    for name, entry in theirs.items():
        comparisons[name] = {
            "deletion_auc": entry["deletion_auc"],
            "ratio": ratio(_mean(ours["deletion_auc"]), _mean(entry["deletion_auc"])),
            "z": _z(ours["deletion_auc"], entry["deletion_auc"]),
            # the probability AUC also measures how confident a model is; these two do not:
            # the area relative to the same model's random order, and the normalized logit
            "vs_own_random": ratio(_mean(entry["deletion_auc"]),
                                   _mean(theirs["random"]["deletion_auc"])),
            "logit_auc_median": entry["logit_auc_median"],
            "jaccard": entry.get("jaccard")}
    jaccard = ours.get("jaccard")
    random_jaccard = own_random.get("jaccard")
    deletion_met = all(c["ratio"] is not None and c["ratio"] < 1
                       for c in comparisons.values())
    jaccard_met = None if jaccard is None else bool(_mean(jaccard) > _mean(random_jaccard))
    return {"model": best["model"], "val_acc": best["val_acc"], "test_acc": best["test_acc"],
            "method": OURS, "deletion_auc": ours["deletion_auc"],
            "logit_auc_median": ours["logit_auc_median"], "jaccard": jaccard,
            "random_jaccard": random_jaccard,
            "jaccard_ratio_vs_random": None if jaccard is None
            else ratio(_mean(jaccard), _mean(random_jaccard)),
            "jaccard_z_vs_random": _z(jaccard, random_jaccard),
            "vs_own_random": ratio(_mean(ours["deletion_auc"]),
                                   _mean(own_random["deletion_auc"])),
            "softmax": comparisons,
            "worst_ratio": max((c["ratio"] for c in comparisons.values()
                                if c["ratio"] is not None), default=None),
            "goal": {"deletion_below_every_softmax_method": deletion_met,
                     "jaccard_above_random": jaccard_met,
                     "met": deletion_met and bool(jaccard_met) if jaccard_met is not None
                     else None}}


# ---------------------------------------------------------------------------------- report
def _pm(entry: dict | None, digits: int = 3) -> str | None:
    if not entry or entry.get("mean") is None:
        return None
    return f"{entry['mean']:.{digits}f} ± {entry['sem']:.{digits}f}"


def _percent(value):
    return f"{100 * value:.2f}"


def report(args, results: dict) -> None:
    rows, summary = results["rows"], results["summary"]
    n = summary["n_eval"]
    print_table(f"explain: models ({summary['source']}); accuracy on the {n} explained test "
                "images in 'eval acc'",
                rows, [Column("model"), Column("beta", "β", "g"),
                       Column("val_acc", "val acc %", _percent),
                       Column("test_acc", "test acc %", _percent),
                       Column("eval_acc", "eval acc %", _percent),
                       Column("n_heads", "heads", "d"),
                       Column("fit_seconds", "fit s", ".1f"),
                       Column("measure_seconds", "measure s", ".1f")])
    convex = [r for r in rows if r["kind"] == "convex"]
    images = summary["foreground_tokens"] is not None
    deletion, localisation = [], []
    for r in convex:
        methods = r["faithfulness"]["methods"]
        deletion.append({"model": r["model"], **{m: _pm(methods[m]["deletion_auc"])
                                                 for m in CONVEX_METHODS},
                         "logit": methods[OURS]["logit_auc_median"]})
        if images:
            clusters = r["faithfulness"]["clusters"]
            localisation.append({"model": r["model"],
                                 **{m: _pm(methods[m]["jaccard"]) for m in CONVEX_METHODS},
                                 "cluster": _pm(clusters["jaccard"]),
                                 "shuffled": _pm(clusters["random_jaccard"]),
                                 "k": clusters["n_clusters"]["mean"]})
    if convex:
        print_table(f"explain: deletion AUC of the predicted class's probability, mean ± sem "
                    f"over {n} images (lower is better); 'logit': median normalized-logit "
                    f"AUC of {OURS}", deletion,
                    [Column("model")] + [Column(m) for m in CONVEX_METHODS]
                    + [Column("logit", "logit AUC (median)", ".3f")])
    if localisation:
        print_table(f"explain: foreground Jaccard of the top-k tokens (k = foreground size), "
                    f"mean ± sem over {n} images (higher is better); best token cluster "
                    "against the same clusters with shuffled tokens", localisation,
                    [Column("model")] + [Column(m) for m in CONVEX_METHODS]
                    + [Column("cluster", "best cluster"), Column("shuffled",
                                                                 "shuffled clusters"),
                       Column("k", "clusters (mean)", ".2f")])
    softmax = rows[-1]
    table = [{"method": m, "deletion": _pm(e["deletion_auc"]),
              "logit": e["logit_auc_median"], "jaccard": _pm(e.get("jaccard"))}
             for m, e in softmax["faithfulness"]["methods"].items()]
    check = softmax["rollout_check"]
    print_table(f"explain: {SOFTMAX} baseline, {n} images", table,
                [Column("method"), Column("deletion", "deletion AUC"),
                 Column("logit", "logit AUC (median)", ".3f"),
                 Column("jaccard", "foreground Jaccard")],
                f"rollout (one layer, no residual) = ½ · attention map + 1/(2s): same token "
                f"order on {100 * check['rollout_same_order_fraction']:.1f}% of the images "
                f"(max |difference from the affine map| "
                f"{check['rollout_minus_affine_max_abs']:.1e}).")
    best = summary["best"]
    if best:
        table = [{"method": m, "theirs": _pm(c["deletion_auc"], 4), "ratio": c["ratio"],
                  "z": c["z"], "random": c["vs_own_random"], "logit": c["logit_auc_median"]}
                 for m, c in best["softmax"].items()]
        goal = best["goal"]
        jaccard = ("" if best["jaccard"] is None else
                   f" Foreground Jaccard of {OURS}: {_pm(best['jaccard'])} against random "
                   f"{_pm(best['random_jaccard'])} (ratio "
                   f"{fmt_ratio(best['jaccard_ratio_vs_random'])}, z = "
                   f"{best['jaccard_z_vs_random']:.1f}).")
        print_table(f"explain: the best convex attention-type head, {best['model']} (val acc "
                    f"{_percent(best['val_acc'] or 0)}%), {OURS} deletion AUC "
                    f"{_pm(best['deletion_auc'], 4)}, against each {SOFTMAX} explanation",
                    table, [Column("method", "softmax explanation"),
                            Column("theirs", "its deletion AUC"),
                            Column("ratio", "ours / theirs", fmt_ratio),
                            Column("z", "z of difference", ".1f"),
                            Column("random", "theirs / its random", fmt_ratio),
                            Column("logit", "its logit AUC (median)", ".3f")],
                    f"ratio < 1: the exact contributions are more faithful (deletion); z: "
                    f"(ours − theirs) / √(sem² + sem²). Confidence-free views: ours / our "
                    f"random order {fmt_ratio(best['vs_own_random'])}, our median "
                    f"normalized-logit AUC {best['logit_auc_median']:.3f}. "
                    f"Goal: deletion below every softmax explanation: "
                    f"{goal['deletion_below_every_softmax_method']}; Jaccard above random: "
                    f"{goal['jaccard_above_random']}.{jaccard}")
    if summary["path"]:
        table = [{"beta": p["beta"], "heads": p["heads"], "ranks": str(p["ranks"]),
                  "gap": p["gap"], "status": p["status"], "seconds": p["seconds"]}
                 for p in summary["path"]["path"]]
        print_table(f"explain: warm-started β path of {best['model']} on the training set "
                    f"(tol {summary['path']['tol']:g})", table,
                    [Column("beta", "β", "g"), Column("heads", "heads Σ rank", "d"),
                     Column("ranks", "rank per block"), Column("gap", "gap", ".1e"),
                     Column("status"), Column("seconds", "s", ".1f")])
    if summary["figures"]:
        print("figures: " + ", ".join(summary["figures"]["files"]))
    print("wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary["seconds"].items()))
