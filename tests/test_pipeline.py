"""``cvxattn features``: real images through the real backbone into the cache, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cvxattn.cli import main
from cvxattn.features import load
from cvxattn.pipeline import FeaturesConfig, load_images

pytest.importorskip("onnxruntime")


def test_features_command_caches_tokens_of_real_images(tmp_path, capsys):
    argv = ["features", "--dataset", "samples-imagenet", "--n", "5", "--d", "16",
            "--cache", str(tmp_path / "features"), "--model-cache", str(tmp_path / "models")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "tokens (5, 49, 16)" in out and "7×7 grid" in out
    folder = FeaturesConfig(dataset="samples-imagenet", n=5, d=16,
                            cache=tmp_path / "features").folder
    tokens = load(folder)
    assert tokens.X.shape == (5, 49, 16) and np.isfinite(tokens.X).all()
    images = load_images("samples-imagenet")
    np.testing.assert_array_equal(tokens.y, images.labels[tokens.indices])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"]
    # a second run is served from the cache
    assert main(argv) == 0


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "cifar100"], "root: expected the cifar-100-python archive"),
    (["--dataset", "samples-mnist", "--n", "21"], "argument --n: expected at most the 20"),
    (["--d", "0"], "argument --d: expected a positive integer"),
    (["--image-size", "100"], "argument --image-size: expected a multiple of 32"),
])
def test_features_command_rejects_bad_requests(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["features", "--cache", str(tmp_path), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_features_help_is_complete(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["features", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--dataset", "--split", "--root", "--n", "--seed", "--image-size", "--d",
                   "--batch-size", "--cache", "--model-cache"):
        assert option in text


def test_fit_command_solves_saves_and_reloads(tmp_path, capsys):
    from cvxattn.io import load_model

    from cvxattn.features import extract
    from tests.test_features import FakeBackbone, FakeImages

    folder = tmp_path / "features"
    extract(FakeImages(), FakeBackbone(), folder, d=3, progress=False)  # every class present
    out = tmp_path / "model"
    assert main(["fit", "--features", str(folder), "--test-features", str(folder),
                 "--head", "mlp", "--beta", "0.05", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "relative gap" in text and "(optimal, exact SVD)" in text and "test accuracy" in text
    model = load_model(out)
    tokens = load(folder)
    assert model.certificate["gap"] <= 1e-6
    assert model.predict(tokens.X).shape == (len(tokens.y),)


def test_fit_command_names_a_missing_cache(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--features", str(tmp_path / "none"), "--out", str(tmp_path / "m")])
    assert "manifest" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--tol", "1"], "argument --tol: expected a relative gap in (0, 1), got 1.0"),
    (["--tol", "1.5"], "argument --tol: expected a relative gap in (0, 1), got 1.5"),
    (["--max-iter", "0"], "argument --max-iter: expected a positive integer"),
    (["--test-features", "NONE"], "argument --test-features: expected a token cache folder"),
    (["--out", "FOLDER"], "argument --out: expected a file name to save the model under"),
    (["--out", "FILE/model"], "argument --out: expected a folder, got the file"),
])
def test_fit_checks_its_arguments_before_solving(tmp_path, capsys, monkeypatch, argv, message):
    """A usage error is a one-line exit 2 before any work: the solve is never reached (before,
    --tol 1.5 saved a 0.84-gap model as "optimal", and a bad --out or --test-features failed
    only after the solve, with a traceback)."""
    from cvxattn import pipeline

    from cvxattn.features import extract
    from tests.test_features import FakeBackbone, FakeImages

    folder = tmp_path / "features"
    extract(FakeImages(), FakeBackbone(), folder, d=3, progress=False)
    (tmp_path / "FOLDER").mkdir()
    (tmp_path / "FILE").write_text("")
    monkeypatch.setattr(pipeline, "solve", lambda *a, **k: pytest.fail("solved"))
    names = {"NONE": str(tmp_path / "none"), "FOLDER": str(tmp_path / "FOLDER"),
             "FILE/model": str(tmp_path / "FILE" / "model")}
    argv = [names.get(a, a) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--features", str(folder), "--out", str(tmp_path / "m"), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
