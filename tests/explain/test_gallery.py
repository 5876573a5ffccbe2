"""Figures, the HTML gallery and ``cvxattn explain`` on real sample images: files written
atomically that open at the right size, exact numbers in them, and bad input named."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import cvxattn as ca
from cvxattn.cli import main
from cvxattn.data import load_samples
from cvxattn.explain import measure, write_gallery
from cvxattn.features import extract, load
from cvxattn.pipeline import cache_images

GRID = (4, 4)


class PatchBackbone:
    """Tokens of 28×28 images: 4×4 patches of 7×7 pixels, 4 statistics each."""

    name, image_size, grid, n_features = "patches", 28, GRID, 4

    def describe(self):
        return {"name": self.name, "version": 1}

    def tokens(self, images):
        out = []
        for image in images:
            x = np.asarray(image, np.float32) / 255
            x = x.mean(2) if x.ndim == 3 else x
            p = x.reshape(4, 7, 4, 7).transpose(0, 2, 1, 3).reshape(16, 49)
            out.append(np.stack([p.mean(1), p.max(1), p.std(1), p[:, 24]], 1))
        return np.stack(out)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The 20 real Fashion-MNIST images shipped in foolbox, as a token cache."""
    folder = tmp_path_factory.mktemp("features") / "samples"
    extract(load_samples("fashion-mnist"), PatchBackbone(), folder, d=4, progress=False)
    return folder


@pytest.fixture(scope="module")
def model(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "attention"
    assert main(["fit", "--features", str(cache), "--head", "attention", "--activation",
                 "gated", "--n-gates", "2", "--beta", "0.01", "--tol", "1e-4",
                 "--out", str(out)]) == 0
    return out


def test_cache_images_are_the_images_of_the_tokens(cache):
    tokens = load(cache)
    images = cache_images(tokens)
    samples = load_samples("fashion-mnist")
    assert len(images) == tokens.n
    for i, index in enumerate(tokens.indices):
        np.testing.assert_array_equal(images[i], samples.images[index])


def test_explain_command_writes_a_gallery_that_opens(cache, model, tmp_path, capsys):
    out = tmp_path / "gallery"
    assert main(["explain", "--model", str(model), "--features", str(cache), "--images",
                 "0", "3", "--faithfulness", "10", "--out", str(out)]) == 0
    assert str(out / "index.html") in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == ["explain.json", "image-0.png", "image-3.png", "index.html",
                     "spectrum.png"]  # nothing half-written left behind
    for name in ("image-0.png", "spectrum.png"):
        with Image.open(out / name) as png:
            png.load()  # decodes
            width, height = png.size
        assert width > 600 and height > 250
    page = (out / "index.html").read_text()
    assert page.count("<img") == 3 and "deletion AUC" in page and "image-3.png" in page
    doc = json.loads((out / "explain.json").read_text())
    tokens = load(cache)
    fitted = ca.io.load_model(model)
    logits = fitted.decision_function(tokens.X[[0, 3]])
    for item, row in zip(doc["images"], logits):
        k = int(row.argmax())
        assert item["predicted"] == tokens.classes[k]
        # the shares drawn on the image add up to the logit exactly
        assert sum(item["share"]) + item["intercept"] == pytest.approx(float(row[k]), abs=1e-9)
        assert len(item["clusters"]) == 16
    methods = doc["faithfulness"]["methods"]
    assert set(methods) == {"exact (Shapley)", "exact (output)", "exact (source)",
                            "gradient × input", "random"}
    assert all(0 <= m["deletion_auc"]["mean"] <= 1 for m in methods.values())


@pytest.mark.parametrize("argv, message", [
    (["--images", "20"], "argument --images: expected positions in [0, 20)"),
    (["--images", "-1"], "argument --images: expected positions ≥ 0"),
    (["--max-clusters", "1"], "argument --max-clusters: expected an integer ≥ 2"),
    (["--faithfulness", "-3"], "argument --faithfulness: expected an integer ≥ 0"),
])
def test_explain_command_names_bad_options(cache, model, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--model", str(model), "--features", str(cache), "--out",
              str(tmp_path / "g"), *argv])
    assert exit_info.value.code == 2
    assert message in " ".join(capsys.readouterr().err.split())


def test_explain_command_refuses_a_model_of_other_tokens(cache, tmp_path, capsys):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 9, 4)), np.arange(20) % 10
    other = ca.solve(ca.Problem(ca.heads.MLP(), X, y, beta=0.1), tol=1e-4)
    ca.io.save_solution(other, tmp_path / "other")
    with pytest.raises(SystemExit):
        main(["explain", "--model", str(tmp_path / "other"), "--features", str(cache),
              "--out", str(tmp_path / "g")])
    assert "argument --features: expected tokens (n, 9, 4)" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        main(["explain", "--model", str(tmp_path / "other"), "--features", str(cache),
              "--out", str(tmp_path / "file")])
    assert "argument --out: expected a folder, got the file" in capsys.readouterr().err


def test_a_failed_gallery_leaves_the_previous_page_intact(cache, model, tmp_path,
                                                          monkeypatch):
    tokens = load(cache)
    fitted = ca.io.load_model(model)
    images = cache_images(tokens)
    args = (fitted, tokens.X, images, tokens.y, tokens.classes, tokens.grid)
    page = write_gallery(tmp_path, *args, indices=[1])
    before = page.read_bytes()
    import cvxattn.explain.gallery as gallery

    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(gallery, "spectrum_figure", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_gallery(tmp_path, *args, indices=[2])
    assert page.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(ValueError, match=r"indices: expected image indices in \[0, 20\)"):
        write_gallery(tmp_path, *args, indices=[25])
    with pytest.raises(ValueError, match="images, labels: expected one per sample"):
        write_gallery(tmp_path, fitted, tokens.X, images[:3], tokens.y, tokens.classes,
                      tokens.grid)


def test_measure_reports_every_method_and_the_clusters(cache, model):
    tokens = load(cache)
    fitted = ca.io.load_model(model)
    numbers = measure(fitted, tokens.X, tokens.X.reshape(-1, 4).mean(0), cache_images(tokens),
                      tokens.grid)
    assert numbers["n_images"] == 20
    for entry in numbers["methods"].values():
        assert len(entry["curve"]) == 17 and 0 <= entry["jaccard"]["mean"] <= 1
    assert {"jaccard", "random_jaccard", "n_clusters"} <= set(numbers["clusters"])


def test_cache_images_refuses_a_cache_whose_images_changed(cache):
    import dataclasses

    tokens = load(cache)
    relabelled = dataclasses.replace(tokens, y=(tokens.y + 1) % 10)
    with pytest.raises(ValueError, match="no longer match the cache"):
        cache_images(relabelled)
    moved = dataclasses.replace(tokens, indices=tokens.indices + 100)
    with pytest.raises(ValueError, match="no longer match the cache"):
        cache_images(moved)
    unnamed = dataclasses.replace(tokens, manifest={})
    with pytest.raises(ValueError, match="features: expected a manifest that names"):
        cache_images(unnamed)


def test_the_page_describes_a_solution_and_a_loaded_model_alike(cache, model):
    from cvxattn.explain.gallery import _describe

    fitted = ca.io.load_model(model)
    tokens = load(cache)
    solution = ca.solve(ca.Problem(fitted.head, tokens.X, tokens.y, beta=0.01), tol=1e-4)
    for described in (_describe(solution), _describe(fitted)):
        labels = dict(described)
        assert labels["β"] == "0.01" and labels["status"] == "optimal" and "head" in labels
