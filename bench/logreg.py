"""Suite ``sklearn``: the linear MLP head against scikit-learn's LogisticRegression.

Under mean pooling the linear MLP head sees exactly the mean token x̄ = (1/s) Σ_t x_t: its
program is multinomial logistic regression on x̄ with a nuclear-norm penalty β‖Z‖_*
(SPEC.md §2.1). The peer is ``LogisticRegression`` (lbfgs, squared-ℓ2 penalty 1/C) on the same
x̄ (n, d). Data: real tokens (the digits by default, ``--features DIR`` for a cached token set),
split 75/25 stratified; a validation part (``--val-fraction``) is carved from training.

Each model picks its own regularization on validation — cvxattn along the β path from the
largest β down, each solve warm-started from the previous solution (``solve(init=...)``);
LogisticRegression along C from the smallest up with ``warm_start=True`` — then is refitted on
the whole training split at the chosen value, warm-started too. Fit time = the whole path plus
the refit (after an untimed run of both whole paths on 200 training samples, so that neither
pays for code loaded lazily on first use). Reported: test accuracy of each, the difference in
points (target |Δ| ≤ 0.3), and the ratio time(cvxattn)/time(LogisticRegression) (target ≤ 1). With the digits,
the mean token has only 4 features (the mean 2×2 patch), so both accuracies are low there; the
comparison is meant for backbone tokens (``--features``).
"""

from __future__ import annotations

import dataclasses
import time
import warnings

import numpy as np

from .common import (Column, check_positive, fill_defaults, fmt_ratio, make_head, print_table,
                     ratio, real_tokens)


def add_arguments(parser) -> None:
    parser.add_argument("--features", metavar="DIR", help="a cached token set "
                        "(cvxattn.features) instead of the digits")
    parser.add_argument("--n-train", type=int, help="stratified subset of the training split "
                        "(default: all; 300 with --quick)")
    parser.add_argument("--betas", type=float, nargs="+",
                        help="β grid of cvxattn (default 1e-6 … 1, 7 values; 3 with --quick)")
    parser.add_argument("--Cs", type=float, nargs="+",
                        help="C grid of LogisticRegression (default 1e-3 … 1e3, 7 values; 3 "
                             "with --quick)")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--patience", type=int, help="stop either path after this many "
                        "values in a row without a better validation accuracy (default: the "
                        "whole grid); the same rule for both models")
    parser.add_argument("--method", default="auto", choices=["auto", "fista", "hybrid", "factorized"])
    parser.add_argument("--tol", type=float, default=1e-4, help="cvxattn's certified relative "
                        "gap for every solve (1e-4; LogisticRegression keeps its default tol)")
    parser.add_argument("--max-iter", type=int, default=20_000,
                        help="iteration limit of each solver")


def resolve(args) -> None:
    fill_defaults(args, n_train=(300, None),
                  betas=(np.logspace(-6, 0, 3).tolist(), np.logspace(-6, 0, 7).tolist()),
                  Cs=(np.logspace(-3, 3, 3).tolist(), np.logspace(-3, 3, 7).tolist()))
    check_positive(args, "betas", "Cs", "tol", "max_iter")
    if args.patience is not None:
        check_positive(args, "patience")
    if args.n_train is not None:
        check_positive(args, "n_train")
    args.betas = sorted(args.betas, reverse=True)
    args.Cs = sorted(args.Cs)
    if not 0 < args.val_fraction < 1:
        raise ValueError(f"--val-fraction: expected a fraction in (0, 1), got "
                         f"{args.val_fraction}")


def _split(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified boolean mask over ``y``: True = fit, False = validation."""
    from cvxattn.digits import stratified_subset

    index = np.arange(len(y))
    val = stratified_subset(index, y, max(1, round(fraction * len(y))), seed)
    return ~np.isin(index, val)


def fit_cvxattn(args, data, fit: np.ndarray) -> dict:
    """β path on the fit part (warm starts, largest β first), pick on validation, refit."""
    import cvxattn as ca

    head = make_head("mlp", "linear", data.grid)
    X, y = data.X_train, data.y_train
    c = int(y.max()) + 1
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ca.ConvergenceWarning)  # statuses are recorded
        problem = ca.Problem(head, X[fit], y[fit], beta=args.betas[0], n_classes=c)
        path = ca.solve_path(problem, args.betas, method=args.method, tol=args.tol,
                             max_iter=args.max_iter, patience=args.patience,
                             score=lambda s: float((s.predict(X[~fit]).numpy()
                                                    == y[~fit]).mean()))
        val_accuracy, beta = path.scores[path.best], path.betas[path.best]  # ties: larger β
        init = path.solutions[path.best]
        problem = ca.Problem(head, X, y, beta=beta, n_classes=c)
        final = ca.solve(problem, method=args.method, tol=args.tol, max_iter=args.max_iter,
                         init=init)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "beta": beta, "val_accuracy": val_accuracy,
            "path_betas": list(path.betas), "path_val_accuracy": list(path.scores),
            "path_iterations": [s.n_iter for s in path.solutions],
            "path_methods": [s.method for s in path.solutions],
            "path_seconds": [s.seconds for s in path.solutions],
            "path_status": [s.status for s in path.solutions],
            "status": final.status, "gap": final.gap, "n_heads": final.n_heads,
            "test_accuracy": float((final.predict(data.X_test).numpy() == data.y_test).mean())}


def fit_logreg(args, data, fit: np.ndarray) -> dict:
    """C path on the fit part (warm starts, smallest C first), pick on validation, refit."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    F = data.X_train.mean(1)  # (n, d): the mean token, what the linear MLP head sees
    y = data.y_train
    path = []
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model = LogisticRegression(warm_start=True, max_iter=args.max_iter)
        for C in args.Cs:
            model.set_params(C=C).fit(F[fit], y[fit])
            path.append((float(model.score(F[~fit], y[~fit])), -C, C,
                         model.coef_.copy(), model.intercept_.copy()))
            best = max(range(len(path)), key=lambda k: (path[k][0], path[k][1]))
            if args.patience is not None and len(path) - 1 - best >= args.patience:
                break  # the same early stop as cvxattn's solve_path
        val_accuracy, _, C, coef, intercept = max(path, key=lambda t: (t[0], t[1]))
        model = LogisticRegression(C=C, warm_start=True, max_iter=args.max_iter)
        model.coef_, model.intercept_ = coef, intercept  # warm start at the chosen C
        model.fit(F, y)
    seconds = time.perf_counter() - start
    # untimed: how far the timed fit stopped from its own optimum (lbfgs stops on a gradient
    # tolerance and certifies nothing); the reference is a refit to tol 1e-12 from it
    tight = LogisticRegression(C=C, warm_start=True, tol=1e-12, max_iter=100 * args.max_iter)
    tight.coef_, tight.intercept_ = model.coef_.copy(), model.intercept_.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        tight.fit(F, y)
    timed_objective = _logreg_objective(model, F, y, C)
    reference = min(_logreg_objective(tight, F, y, C), timed_objective)
    return {"seconds": seconds, "C": C, "val_accuracy": val_accuracy,
            "path_Cs": [p[2] for p in path], "path_val_accuracy": [p[0] for p in path],
            "objective": timed_objective, "reference_objective": reference,
            "relative_suboptimality": (timed_objective - reference) / reference,
            "n_iter": int(np.max(model.n_iter_)),
            "convergence_warnings": [str(w.message) for w in caught
                                     if issubclass(w.category, ConvergenceWarning)],
            "test_accuracy": float(model.score(data.X_test.mean(1), data.y_test))}


def _logreg_objective(model, F: np.ndarray, y: np.ndarray, C: float) -> float:
    """LogisticRegression's objective C Σ_i CE_i + ½‖coef‖², divided by C·n: the mean
    cross-entropy + ‖coef‖² / (2 C n) (the intercept is not penalized)."""
    from scipy.special import logsumexp

    logits = F @ model.coef_.T + model.intercept_
    labels = np.searchsorted(model.classes_, y)
    ce = logsumexp(logits, axis=1) - logits[np.arange(len(y)), labels]
    return float(ce.mean() + (model.coef_ ** 2).sum() / (2 * C * len(y)))


def run(args) -> dict:
    data = real_tokens(args.features, args.n_train, None, args.seed)
    fit = _split(data.y_train, args.val_fraction, args.seed + 2)
    # warm-up, untimed: both whole paths on a small stratified subset, so that neither pays
    # for code loaded lazily on first use (each method of a hybrid solver, L-BFGS's imports)
    from cvxattn.digits import stratified_subset

    keep = np.sort(stratified_subset(np.arange(len(data.y_train)), data.y_train,
                                     min(len(data.y_train), 200), args.seed))
    small = dataclasses.replace(data, X_train=data.X_train[keep], y_train=data.y_train[keep])
    fit_cvxattn(args, small, fit[keep])
    fit_logreg(args, small, fit[keep])
    convex = fit_cvxattn(args, data, fit)
    peer = fit_logreg(args, data, fit)
    difference = 100 * (convex["test_accuracy"] - peer["test_accuracy"])
    row = {"program": "mlp-linear", "data": data.source, "n_train": len(data.y_train),
           "n_test": len(data.y_test), "features": data.X_train.shape[2],
           "cvxattn": convex, "logreg": peer, "accuracy_difference_points": difference,
           "ratios": {"time": ratio(convex["seconds"], peer["seconds"])}}
    print(f"  cvxattn {convex['seconds']:.3f} s, test {100 * convex['test_accuracy']:.2f}%; "
          f"LogisticRegression {peer['seconds']:.3f} s, test "
          f"{100 * peer['test_accuracy']:.2f}%", flush=True)
    return {"rows": [row], "summary": {"betas": args.betas, "Cs": args.Cs}}


def report(args, results: dict) -> None:
    row = results["rows"][0]
    table = [{"model": "cvxattn linear MLP", "reg": f"β={row['cvxattn']['beta']:.3g}",
              "val": 100 * row["cvxattn"]["val_accuracy"],
              "test": 100 * row["cvxattn"]["test_accuracy"],
              "seconds": row["cvxattn"]["seconds"], "ratio": row["ratios"]["time"],
              "gap": f"≤ {row['cvxattn']['gap']:.1e} (certified)"},
             {"model": "LogisticRegression", "reg": f"C={row['logreg']['C']:.3g}",
              "val": 100 * row["logreg"]["val_accuracy"],
              "test": 100 * row["logreg"]["test_accuracy"],
              "seconds": row["logreg"]["seconds"], "ratio": 1.0,
              "gap": f"{row['logreg']['relative_suboptimality']:.1e} (measured)"}]
    print_table(
        f"sklearn: mean-token features of {row['data']}, n_train = {row['n_train']}, n_test = "
        f"{row['n_test']}; regularization picked on a {args.val_fraction:g} validation split",
        table, [Column("model"), Column("reg", "chosen"), Column("val", "val acc %", ".2f"),
                Column("test", "test acc %", ".2f"), Column("seconds", "fit s (path + refit)",
                                                            ".3g"),
                Column("gap", "final fit: rel. suboptimality"),
                Column("ratio", "time ratio", fmt_ratio)],
        f"test accuracy difference cvxattn − LogisticRegression: "
        f"{row['accuracy_difference_points']:+.2f} points (target within ±0.3); time ratio = "
        "fit s / LogisticRegression's fit s (target ≤ 1×). Relative suboptimality of the final "
        "fit: cvxattn's certified gap; LogisticRegression's measured against a refit of its "
        "own problem to tol 1e-12 (untimed).")
