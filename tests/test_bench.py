"""The benchmark suites (bench/) run end to end at --quick sizes and write complete JSON.

Nothing here asserts a timing: only that every suite prints its ratio table, writes strict JSON
with the environment, the configuration and the raw numbers, and that every ratio it reports is
a finite positive number.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench.__main__ import main
from bench.common import parse_programs, planted_data, run_isolated

# each suite at --quick sizes, trimmed to what keeps this file short on two cores
QUICK = {
    "cvxpy": ["--heads", "mlp-linear"],
    "adamw": ["--heads", "mlp-linear"],
    "sklearn": [],
    "scale": ["--heads", "fno-gated", "--n", "200"],
    "roofline": ["--heads", "mlp-linear", "attention-gated", "fno-gated"],
    "explain": [],
}
# keys every row of a suite carries (besides "ratios")
ROW_KEYS = {
    "cvxpy": {"program", "n", "ladder", "largest_n", "best_solver", "cvxpy_seconds",
              "cvxpy_memory_mib", "target_objective", "cvxattn"},
    "adamw": {"program", "optimum", "cvxattn", "adam", "adam_seconds", "cap_seconds",
              "adam_gap_at_cvxattn_time", "heads_per_block", "ratio_is_lower_bound"},
    "sklearn": {"program", "cvxattn", "logreg", "accuracy_difference_points"},
    "scale": {"program", "n", "seconds", "status", "gap", "n_heads", "pass_seconds",
              "memory_mib", "failure"},
    "roofline": {"program", "flops", "seconds", "gflops", "fft_not_counted"},
    "explain": {"model", "kind", "val_acc", "test_acc", "eval_acc", "fit_seconds",
                "measure_seconds", "faithfulness"},
}


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and value > 0


@pytest.mark.parametrize("suite", list(QUICK))
def test_quick_suite_writes_ratios_and_raw_numbers(suite, tmp_path, capsys):
    path = tmp_path / f"{suite}.json"
    assert main([suite, "--quick", "--json", str(path), *QUICK[suite]]) == 0
    printed = capsys.readouterr().out
    assert "| program" in printed or "| model" in printed  # the ratio table
    result = json.loads(path.read_text())
    assert result["suite"] == suite
    env = result["environment"]
    for key in ("date", "command", "python", "cpu_count", "torch_threads", "blas_threads"):
        assert key in env
    for package in ("torch", "numpy", "cvxpy", "cvxattn"):
        assert env["versions"][package]
    assert result["config"]["command"].startswith(f"python -m bench {suite} --quick")
    rows = result["rows"]
    assert rows
    for row in rows:
        assert ROW_KEYS[suite] <= set(row), ROW_KEYS[suite] - set(row)
        assert row["ratios"] and all(_positive(v) for v in row["ratios"].values()), row["ratios"]


def test_explain_compares_exact_contributions_with_the_softmax_head(tmp_path):
    """The best attention-type head's exact contributions against every explanation of the
    softmax baseline, the rollout check, the β path and the two figures."""
    path = tmp_path / "explain.json"
    main(["explain", "--quick", "--json", str(path), "--figures", str(tmp_path / "fig")])
    result = json.loads(path.read_text())
    rows = {row["model"]: row for row in result["rows"]}
    assert set(rows) == {"attention-linear", "mlp-gated", "attention (softmax)"}
    assert set(rows["mlp-gated"]["faithfulness"]["methods"]) == {
        "exact (Shapley)", "exact (output)", "exact (source)", "gradient × input", "random"}
    softmax = rows["attention (softmax)"]
    assert set(softmax["faithfulness"]["methods"]) == {
        "attention map", "attention rollout", "gradient × input", "random"}
    # one layer without a residual: rollout is an increasing affine map of the attention map
    assert softmax["rollout_check"]["rollout_same_order_fraction"] == 1.0
    assert softmax["rollout_check"]["rollout_minus_affine_max_abs"] < 1e-6
    for entry in softmax["faithfulness"]["methods"].values():
        assert 0 <= entry["deletion_auc"]["mean"] <= 1 and "jaccard" not in entry  # no images
    best = result["summary"]["best"]
    assert best["model"] == "attention-linear"  # the only attention-type head fitted
    ours = rows["attention-linear"]["faithfulness"]["methods"]["exact (Shapley)"]
    for name, comparison in best["softmax"].items():
        theirs = softmax["faithfulness"]["methods"][name]["deletion_auc"]["mean"]
        assert comparison["ratio"] == pytest.approx(ours["deletion_auc"]["mean"] / theirs)
    assert best["goal"]["deletion_below_every_softmax_method"] == (best["worst_ratio"] < 1)
    assert best["goal"]["jaccard_above_random"] is None and best["goal"]["met"] is None
    steps = result["summary"]["path"]["path"]
    assert [p["beta"] for p in steps] == [0.1, 0.01]
    assert all(p["heads"] == sum(p["ranks"]) for p in steps)
    for name in ("spectrum.png", "rank-path.png"):
        assert (tmp_path / "fig" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cvxpy_rows_record_the_ladder_and_both_methods(tmp_path):
    path = tmp_path / "cvxpy.json"
    main(["cvxpy", "--quick", "--json", str(path), "--heads", "mlp-linear", "--solvers", "SCS",
          "--methods", "auto"])
    row = json.loads(path.read_text())["rows"][0]
    assert [a["solver"] for a in row["ladder"]] == ["SCS"]
    assert row["ladder"][0]["solved"] and row["cvxattn"]["auto"]["reached"]
    assert set(row["ratios"]) == {"time_auto", "memory_auto"}


def _token_cache(root, n=48):
    """A token cache (cvxattn.features) of n random images with 4 tokens of 6 features."""
    from cvxattn.features import extract

    rng = np.random.default_rng(0)

    class Images:
        name, split, source = "toy", "train", "memory"
        classes = ("a", "b", "c")
        images = [rng.integers(0, 255, (4, 4), dtype=np.uint8) for _ in range(n)]
        labels = np.arange(n) % 3

    class Backbone:
        name, image_size, grid, n_features = "toy", 4, (2, 2), 6

        def describe(self):
            return {"name": "toy", "version": 1}

        def tokens(self, images):
            return np.stack([np.resize(im.astype(np.float32) / 255, (4, 6)) for im in images])

    extract(Images(), Backbone(), root, d=6, progress=False)
    return root


def test_sklearn_and_adamw_run_on_cached_features(tmp_path):
    cache = _token_cache(tmp_path / "cache")
    for suite, extra in (("sklearn", []), ("adamw", ["--heads", "fno-linear"])):
        path = tmp_path / f"{suite}.json"
        main([suite, "--quick", "--json", str(path), "--features", str(cache), "--n-train",
              "30", *extra])
        result = json.loads(path.read_text())
        assert "toy tokens of toy" in json.dumps(result["summary"]) + json.dumps(result["rows"])
        assert all(_positive(v) for row in result["rows"] for v in row["ratios"].values())
        if suite == "sklearn":  # the timed fit is measured against its own tighter refit
            assert result["rows"][0]["logreg"]["relative_suboptimality"] >= 0


def test_logreg_objective_is_sklearns_scaled_by_c_n():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from bench.logreg import _logreg_objective

    rng = np.random.default_rng(0)
    F, y = rng.normal(size=(60, 3)), rng.integers(0, 3, size=60)
    model = LogisticRegression(C=0.5).fit(F, y)
    expected = log_loss(y, model.predict_proba(F)) + (model.coef_ ** 2).sum() / (2 * 0.5 * 60)
    assert _logreg_objective(model, F, y, 0.5) == pytest.approx(expected, rel=1e-12)


def test_bad_heads_are_rejected_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["roofline", "--quick", "--json", str(tmp_path / "x.json"), "--heads", "lstm"])
    assert "--heads" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_child_is_killed_at_its_time_limit():
    outcome = run_isolated("bench.ladder:cvxpy_child", {"never": "reached"}, time_limit=0.5)
    assert not outcome["ok"] and outcome["failure"] == "time limit (setup)"
    assert outcome["peak_rss_kib"] > 0


def test_planted_labels_cover_every_class_and_are_seeded():
    X, y = planted_data(40, 9, 3, 7, heads=2, seed=3)
    assert X.shape == (40, 9, 3) and X.dtype == np.float32
    assert np.bincount(y, minlength=7).min() >= 1
    X2, y2 = planted_data(40, 9, 3, 7, heads=2, seed=3)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    with pytest.raises(ValueError, match="n: expected at least c"):
        planted_data(5, 9, 3, 7)


def test_program_names():
    assert len(parse_programs(None)) == 10
    assert parse_programs(["fno-gated", "fno"]) == [("fno", "gated"), ("fno", "linear")]
    with pytest.raises(ValueError, match="--heads"):
        parse_programs(["mlp-relu"])


def test_scale_child_keeps_its_progress_for_a_run_cut_off_later():
    """Every checkpoint of the timed solve is saved as it comes, so a run killed at its time
    limit still reports the certified gap it had reached."""
    from bench.scale import _reached, scale_child
    from bench.worker import Marks

    class Recording(Marks):
        def __init__(self):
            super().__init__()
            self.saved = []

        def partial(self, result):
            self.saved.append(result)

    spec = {"head": "mlp", "activation": "gated", "n": 200, "s": 16, "d": 8, "c": 10,
            "gates": 2, "groups": 2, "beta": 1e-3, "method": "factorized", "tol": 1e-3,
            "max_iter": 500, "planted_heads": 4, "snr": 3.0, "pass_repeats": 1, "seed": 0,
            "device": "cpu"}
    marks = Recording()
    result = scale_child(spec, marks)
    progress = [saved["last_checkpoint"] for saved in marks.saved if "last_checkpoint" in saved]
    assert [p["gap"] for p in progress] == [h[2] for h in result["history"]]
    assert all(saved["method"] == result["method"] for saved in marks.saved)
    assert marks.saved[0] == {"method": result["method"]}  # saved before the solve starts
    first = progress[0]
    killed = {"failure": "time limit", "last_checkpoint": first}
    assert _reached(killed) == f", last certified gap {first['gap']:.1e} (estimated " \
                               f"{first['estimated_gap']:.1e}) at {first['seconds']:.0f} s"
    assert _reached(result) == ""  # a finished solve reports its own status and gap
    # before its first bound the gap is infinite, which strict JSON stores as a string
    early = {"failure": "time limit", "last_checkpoint": dict(first, gap="Infinity")}
    assert _reached(early).startswith(", no gap certified yet (estimated ")
    fista = {"failure": "time limit", "last_checkpoint": dict(first, estimated_gap=None)}
    assert "estimated" not in _reached(fista)


def test_the_cvxpy_ladder_counts_every_status_cvxpy_solves_with():
    """CVXPY's optimal and optimal_inaccurate results are what solve_cvxpy reports as the
    typed statuses "optimal" and "inaccurate"; the ladder must count both as solved (it
    stopped at the first low-accuracy rung when the names drifted apart)."""
    import cvxattn as ca
    from bench.ladder import SOLVED

    assert set(SOLVED) == {ca.Status.OPTIMAL, ca.Status.INACCURATE}
