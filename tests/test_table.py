"""``cvxattn table`` and ``cvxattn run``: the paper's protocol end to end on tiny data."""

from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pytest

from cvxattn.cli import main
from cvxattn.features import extract, load
from cvxattn.table import ProtocolConfig, TableConfig, prepare

GRID, D = (2, 2), 4


class Images:
    """n images whose pixels carry their class (two classes) plus noise."""

    source, classes = "memory", ("a", "b")

    def __init__(self, n, seed, split):
        rng = np.random.default_rng(seed)
        self.name, self.split = "toy", split
        self.labels = np.arange(n) % 2
        self.images = [np.clip(rng.normal(100 + 60 * y, 40, (4, 4)), 0, 255).astype(np.uint8)
                       for y in self.labels]

    def __len__(self):
        return len(self.labels)


class Backbone:
    """Each 2×2 patch becomes a token of D statistics of its pixels."""

    name, image_size, grid, n_features = "toy", 4, GRID, D

    def describe(self):
        return {"name": "toy", "version": 1}

    def tokens(self, images):
        out = []
        for im in images:
            patches = np.asarray(im, np.float32).reshape(2, 2, 2, 2).transpose(0, 2, 1, 3)
            p = patches.reshape(4, 4) / 255
            out.append(np.stack([p.mean(1), p.max(1), p.min(1), p[:, 0]], axis=1))
        return np.stack(out)


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokens")
    extract(Images(40, 0, "train"), Backbone(), root / "train", d=D, progress=False)
    extract(Images(20, 1, "test"), Backbone(), root / "test", d=D, progress=False)
    return root / "train", root / "test"


def test_table_fits_heads_networks_and_baselines_and_writes_every_file(caches, tmp_path,
                                                                       capsys):
    out = tmp_path / "results"
    argv = ["table", "--train", str(caches[0]), "--test", str(caches[1]), "--heads", "mlp",
            "attention", "--beta", "1e-2", "3e-3", "--tol", "1e-4", "--epochs", "2",
            "--bfno-groups", "2", "--n-gates", "mlp=3", "attention=2", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| head" in printed and "files:" in printed
    rows = json.loads((out / "table.json").read_text())["rows"]
    convex = [r for r in rows if r["fitted_by"] == "cvxattn"]
    networks = [r for r in rows if r["fitted_by"] == "AdamW" and r["activation"]]
    assert len(convex) == 4 and len(networks) == 4
    for r in convex:
        assert r["status"] == "optimal" and r["gap"] <= 1e-4
        tried = sorted(entry[0] for entry in r["path"])
        assert r["beta"] in tried and 0 <= r["val_acc"] <= 1
        # the grid {1e-2, 3e-3} is widened (√10 steps, at most 2) while the pick is on an
        # edge; a pick still on an edge is flagged
        assert len(tried) <= 4 and tried[0] >= 3e-3 / 10 ** 1.01 and tried[-1] <= 1e-1 * 1.01
        assert r["edge"] == (["β"] if r["beta"] in (tried[0], tried[-1]) else [])
        assert r["history"] and r["parameters"] >= r["heads"]
    for net, cvx in zip(networks, convex):  # each network follows its convex row
        assert (net["head"], net["activation"], net["beta"]) == \
            (cvx["head"], cvx["activation"], cvx["beta"])
        # AdamW minimizes the same program: it cannot beat the certified lower bound
        assert net["objective"] >= cvx["lower_bound"] - 1e-6
    baselines = [r for r in rows if r["activation"] is None or r["fitted_by"] == "scikit-learn"]
    assert [r["head"] for r in baselines] == ["logistic (mean token)", "logistic (tokens)",
                                              f"linear probe ({D} channels)", "mlp (ReLU)",
                                              "attention (softmax)", "attentive probe"]
    for r in baselines:  # hyperparameters picked on validation, edges flagged
        assert any("picked on validation" in note for note in r["notes"]), r
        assert r["edge"] in ([], ["C"], ["lr"], ["decay"], ["lr", "decay"])
    with open(out / "table.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and table[0]["head"] == "mlp"
    markdown = (out / "table.md").read_text()
    assert "- command: `cvxattn table" in markdown and "torch" in markdown
    for name in ("accuracy.png", "gap.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".*"))


def test_one_beta_skips_selection_and_none_skips_baselines(caches, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["table", "--train", str(caches[0]), "--test", str(caches[1]), "--heads",
                 "fno", "--activations", "linear", "--beta", "1e-2", "--baselines", "none",
                 "--out", str(out)]) == 0
    rows = json.loads((out / "table.json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["val_acc"] is None and rows[0]["select_seconds"] is None


def test_seeds_repeat_the_table_and_report_mean_and_deviation(caches, tmp_path, capsys):
    out = tmp_path / "seeds"
    assert main(["table", "--train", str(caches[0]), "--test", str(caches[1]), "--heads",
                 "mlp", "--activations", "gated", "--n-gates", "mlp=3", "--beta", "1e-2",
                 "3e-3", "--baselines", "logistic-mean", "--seeds", "3", "--seed", "4",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 seeds (4, 5, 6): mean ± sample standard deviation" in printed
    saved = json.loads((out / "table.json").read_text())
    rows, by_model = saved["rows"], saved["by_model"]
    assert [r["seed"] for r in rows] == [4, 4, 5, 5, 6, 6]
    assert [r["head"] for r in by_model] == ["mlp", "logistic (mean token)"]
    # each seed draws its own gates and validation split: the tables differ
    convex = [r for r in rows if r["fitted_by"] == "cvxattn"]
    assert len({r["objective"] for r in convex}) == 3
    accuracies = np.array([r["test_acc"] for r in convex])
    assert by_model[0]["seeds"] == [4, 5, 6]
    assert by_model[0]["betas"] == [r["beta"] for r in convex]
    np.testing.assert_allclose(by_model[0]["test_acc"], accuracies.mean())
    np.testing.assert_allclose(by_model[0]["test_acc_std"], accuracies.std(ddof=1))
    assert by_model[0]["gap"] == max(r["gap"] for r in convex)
    row = f"{100 * accuracies.mean():.2f} ± {100 * accuracies.std(ddof=1):.2f}"
    assert row in printed
    with open(out / "table.csv", newline="") as f:
        assert [r["seed"] for r in csv.DictReader(f)] == ["4", "4", "5", "5", "6", "6"]


def test_float32_solves_certify_the_float64_optimum(caches, tmp_path):
    """--dtype float32 certifies the same optimum as float64, to the requested gap."""
    rows = {}
    for dtype in ("float64", "float32"):
        out = tmp_path / dtype
        assert main(["table", "--train", str(caches[0]), "--test", str(caches[1]), "--heads",
                     "mixer", "--activations", "gated", "--beta", "1e-2", "--tol", "1e-4",
                     "--baselines", "none", "--dtype", dtype, "--out", str(out)]) == 0
        rows[dtype] = json.loads((out / "table.json").read_text())["rows"][0]
    single, double = rows["float32"], rows["float64"]
    assert single["status"] == "optimal" and single["gap"] <= 1e-4
    # each certificate brackets the optimum: the two intervals overlap
    assert single["lower_bound"] <= double["objective"] + 1e-6
    assert double["lower_bound"] <= single["objective"] + 1e-6


def test_standardization_uses_training_statistics_only(caches):
    train, test = load(caches[0]), load(caches[1])
    data = prepare(TableConfig(train=caches[0], test=caches[1], bfno_groups=2), train, test)
    flat = data.X_train.reshape(-1, D)
    np.testing.assert_allclose(flat.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(flat.std(0), 1, atol=1e-4)
    expected = (test.X - data.mean) / data.std
    np.testing.assert_allclose(data.X_test, expected, atol=1e-5)
    # the validation split is stratified and disjoint from the fit part
    assert 0 < (~data.fit_mask).sum() < len(data.fit_mask)
    assert set(data.y_train[~data.fit_mask]) == {0, 1}


@pytest.mark.parametrize("argv, message", [
    (["--beta", "0"], "argument --beta: expected distinct finite numbers > 0"),
    (["--tol", "2"], "argument --tol: expected a number in (0, 1)"),
    (["--dtype", "float32", "--tol", "1e-6"], "argument --tol: expected at least 1e-5"),
    (["--baselines", "none", "logistic-mean"], "argument --baselines: expected distinct names"),
    (["--heads", "none", "mlp"], "argument --heads: expected distinct names"),
    (["--heads", "none", "--baselines", "none"], "argument --heads: expected a head or a"),
    (["--bfno-groups", "3"], "argument --bfno-groups: expected B dividing d = 4"),
    (["--bfno-groups", "2", "--val-fraction", "0.01"],
     "argument --val-fraction: the validation part"),
])
def test_table_rejects_bad_options_naming_them(caches, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["table", "--train", str(caches[0]), "--test", str(caches[1]),
              "--out", str(tmp_path), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_table_rejects_caches_that_do_not_match(caches, tmp_path, capsys):
    other = tmp_path / "other"
    extract(Images(20, 2, "test"), Backbone(), other, d=2, progress=False)
    with pytest.raises(SystemExit):
        main(["table", "--train", str(caches[0]), "--test", str(other), "--out",
              str(tmp_path / "r")])
    assert "argument --test: expected tokens like the training tokens" in \
        capsys.readouterr().err


def test_protocol_config_names_the_bad_field():
    with pytest.raises(ValueError, match="heads: expected distinct names"):
        ProtocolConfig(heads=("mlp", "mlp"))
    with pytest.raises(ValueError, match="n_gates: expected HEAD=M"):
        ProtocolConfig(n_gates={"mlp": 0})


def test_merge_joins_tables_fitted_apart_into_the_table_fitted_at_once(caches, tmp_path,
                                                                        capsys):
    """Parts fitted by separate commands merge into the rows, values and order of the whole
    table; tables fitted under another protocol, or fitting one model twice, are refused."""
    common = ["table", "--train", str(caches[0]), "--test", str(caches[1]), "--beta", "1e-2",
              "3e-3", "--n-gates", "mlp=3", "--bfno-groups", "2"]

    def table(name, *argv):
        assert main([*common, *argv, "--out", str(tmp_path / name)]) == 0
        return tmp_path / name

    whole = table("whole", "--heads", "mlp", "fno", "--baselines", "logistic-mean")
    fno = table("fno", "--heads", "fno", "--baselines", "none")
    mlp = table("mlp", "--heads", "mlp", "--baselines", "none")
    baselines = table("baselines", "--heads", "none", "--baselines", "logistic-mean")
    out = tmp_path / "merged"
    assert main(["merge", "--tables", str(baselines), str(fno), str(mlp), "--out",
                 str(out)]) == 0
    merged = json.loads((out / "table.json").read_text())
    expected = json.loads((whole / "table.json").read_text())["rows"]
    keys = ("head", "activation", "fitted_by", "beta", "objective", "gap", "test_acc", "seed")
    assert [[r[k] for k in keys] for r in merged["rows"]] == \
        [[r[k] for k in keys] for r in expected]
    assert merged["config"]["heads"] == ["fno", "mlp"]
    assert [s["folder"] for s in merged["manifest"]["sources"]] == \
        [str(baselines), str(fno), str(mlp)]
    assert "3 tables merged" in (out / "table.md").read_text()
    for name in ("table.csv", "accuracy.png", "gap.png"):
        assert (out / name).exists()

    other = table("tol", "--heads", "attention", "--baselines", "none", "--tol", "1e-4")
    for tables, message in (([mlp, other], "was fitted with tol = 0.0001"),
                            ([mlp, mlp], "both have the row"),
                            ([mlp, tmp_path / "none"], "has no readable table.json")):
        with pytest.raises(SystemExit) as exit_info:
            main(["merge", "--tables", *map(str, tables), "--out", str(tmp_path / "x")])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert "argument --tables:" in error and message in error


def test_table_and_run_help_are_complete(capsys):
    for command, options in (("table", ("--train", "--test", "--heads", "--beta", "--tol",
                                        "--baselines", "--out")),
                             ("run", ("--full", "--n-train", "--n-test", "--d", "--cache",
                                      "--root", "--heads", "--beta", "--out"))):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        for option in options:
            assert option in text


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(k).to_bytes(4, "big")
                                                     for k in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_run_extracts_real_backbone_tokens_then_prints_the_table(tmp_path, capsys):
    """The main job on a tiny Fashion-MNIST folder in the real IDX format, through the real
    EfficientNet-Lite0 (ONNX Runtime)."""
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    root = tmp_path / "fashion-mnist"
    root.mkdir()
    for prefix, n in (("train", 30), ("t10k", 10)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 256, (n, 28, 28))
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    out = tmp_path / "results"
    argv = ["run", "--root", str(root), "--n-train", "30", "--n-test", "10", "--d", "10",
            "--val-fraction", "0.34", "--heads", "mlp", "fno", "--activations", "linear",
            "--beta", "0.1", "--baselines", "logistic-tokens", "--pool", "avg", "--cache",
            str(tmp_path / "features"),
            "--model-cache", str(tmp_path / "models"), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| mlp" in printed and "| logistic" in printed and str(out) in printed
    rows = json.loads((out / "table.json").read_text())["rows"]
    assert rows[0]["status"] == "optimal" and rows[0]["gap"] <= 1e-3
    # the gallery of the best attention-type head (the FNO here): one image per test class
    assert str(out / "explain" / "index.html") in printed
    gallery = json.loads((out / "explain" / "explain.json").read_text())
    assert "FNO" in gallery["model"]["head"] and len(gallery["images"]) == 8
    assert gallery["faithfulness"]["n_images"] == 10
    cached = [p for p in (tmp_path / "features").iterdir() if p.is_dir()]
    assert len(cached) == 2 and all(load(p).X.shape[1:] == (49, 10) for p in cached)
    with pytest.raises(SystemExit) as exit_info:  # more images than the folder has
        main([*argv[:3], "--n-train", "31", *argv[5:]])
    assert exit_info.value.code == 2
    assert "argument --n-train: expected at most the 30 images" in capsys.readouterr().err
    # --pool pca (the default): the training cache fits the PCA, the test cache is projected
    # with it
    assert main([*argv[:-2], "--pool", "pca", "--gallery", "0", "--baselines", "none",
                 "--out", str(tmp_path / "pca")]) == 0
    pca = {p.name: load(p) for p in (tmp_path / "features").iterdir() if "-pca" in p.name}
    train = next(t for name, t in pca.items() if "-train-" in name)
    test = next(t for name, t in pca.items() if "-test-" in name)
    assert len(pca) == 2 and train.projection is not None and test.projection is None
    assert test.manifest["request"]["pool"]["projection_sha256"] == train.projection.sha256
    assert train.projection.n_tokens == 30 * 49  # every training token, no test token
    with pytest.raises(SystemExit):  # test images are never projected by their own PCA
        main(["features", "--root", str(root), "--split", "test", "--pool", "pca",
              "--cache", str(tmp_path / "features")])
    assert "argument --pca-from: expected the training cache" in capsys.readouterr().err
