"""The token cache: round trip, reuse, resume after a crash or a kill, invalidation, repair."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch


from cvxattn.backbones import pool_features
from cvxattn.features import MANIFEST, TokenSet, extract, load

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES, SIZE, GRID, F = 23, 12, (2, 3), 7  # s = 6 tokens of 7 features; 23 images
S = GRID[0] * GRID[1]


@dataclass(frozen=True)
class FakeImages:
    """Stand-in for cvxattn.data.ImageSet: small random uint8 images, grey and colour."""

    name: str = "fake"
    split: str = "train"
    source: str = "memory"
    classes: tuple = ("a", "b", "c")
    seed: int = 0
    images: list = field(init=False)
    labels: np.ndarray = field(init=False)

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        ims = [rng.integers(0, 256, (SIZE, SIZE, 3) if i % 2 else (SIZE, SIZE), dtype=np.uint8)
               for i in range(N_IMAGES)]
        object.__setattr__(self, "images", ims)
        object.__setattr__(self, "labels", rng.integers(0, 3, N_IMAGES).astype(np.int64))

    def __len__(self):
        return len(self.labels)


class FakeBackbone:
    """Deterministic tokens from pixels: per-patch statistics on a 2×3 grid. Counts the images
    it processed; raises after ``fail_after`` batches, or hangs after ``hang_after`` batches
    (writing ``marker`` first) so that a test can kill it."""

    name, image_size, grid, n_features = "fake", SIZE, GRID, F

    def __init__(self, version=1, fail_after=None, hang_after=None, marker=None):
        self.version, self.fail_after, self.hang_after, self.marker = \
            version, fail_after, hang_after, marker
        self.n_images = self.n_batches = 0

    def describe(self):
        return {"name": self.name, "weights_sha256": f"v{self.version}", "size": SIZE}

    def tokens(self, images):
        if self.fail_after is not None and self.n_batches >= self.fail_after:
            raise RuntimeError("fake backbone failure")
        if self.hang_after is not None and self.n_batches >= self.hang_after:
            Path(self.marker).write_text("hanging")
            time.sleep(120)
        self.n_batches += 1
        self.n_images += len(images)
        return np.stack([self._one(im) for im in images])  # (k, s, F)

    @staticmethod
    def _one(image):
        x = image.astype(np.float32) / 255
        x = x if x.ndim == 3 else x[..., None]  # (H, W, c)
        h, w = SIZE // GRID[0], SIZE // GRID[1]
        patches = x.reshape(GRID[0], h, GRID[1], w, -1).transpose(0, 2, 1, 3, 4)
        patches = patches.reshape(S, -1)  # (s, h·w·c)
        stats = [patches.mean(1), patches.std(1), patches.max(1), patches.min(1),
                 (patches ** 2).mean(1), patches[:, 0], patches[:, -1]]
        return np.stack(stats, 1).astype(np.float32)  # (s, F)


def direct(images, backbone, d, indices=None):
    """What the cache must hold, computed without it."""
    indices = np.arange(len(images)) if indices is None else np.asarray(indices)
    tokens = backbone.tokens([images.images[i] for i in indices])
    return pool_features(tokens, d), images.labels[indices]


def shard_bytes(cache):
    return {p.name: p.read_bytes() for p in sorted(Path(cache).glob("shard-*.safetensors"))}


OPTS = dict(d=5, batch_size=3, shard_size=7, progress=False)  # 23 images → 4 shards


def test_round_trip_equals_direct_computation(tmp_path):
    images = FakeImages()
    ts = extract(images, FakeBackbone(), tmp_path, **OPTS)
    X, y = direct(images, FakeBackbone(), 5)
    assert isinstance(ts, TokenSet) and ts.X.dtype == np.float32 and ts.y.dtype == np.int64
    assert ts.X.shape == (N_IMAGES, S, 5) and (ts.n, ts.s, ts.d) == (N_IMAGES, S, 5)
    np.testing.assert_array_equal(ts.X, X)
    np.testing.assert_array_equal(ts.y, y)
    np.testing.assert_array_equal(ts.indices, np.arange(N_IMAGES))
    assert ts.classes == ("a", "b", "c") and ts.grid == GRID
    again = load(tmp_path)
    np.testing.assert_array_equal(again.X, X)
    # every backbone feature averaged over the tokens, before pooling: the linear probe's input
    full = FakeBackbone().tokens(images.images)  # (n, s, F)
    assert again.features_mean.shape == (N_IMAGES, F)
    np.testing.assert_allclose(again.features_mean, full.mean(1), rtol=1e-6)
    np.testing.assert_array_equal(ts.features_mean, again.features_mean)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["complete"] and len(manifest["shards"]) == 4
    assert manifest["request"]["backbone"]["description"]["weights_sha256"] == "v1"
    assert manifest["request"]["pool"]["d"] == 5
    assert manifest["environment"]["versions"]["safetensors"] is not None


def test_indices_subset_and_no_pooling(tmp_path):
    images, idx = FakeImages(), [20, 3, 3, 0, 11]
    ts = extract(images, FakeBackbone(), tmp_path, d=None, indices=idx, progress=False)
    tokens = FakeBackbone().tokens([images.images[i] for i in idx])
    np.testing.assert_array_equal(ts.X, tokens)
    np.testing.assert_array_equal(ts.y, images.labels[idx])
    np.testing.assert_array_equal(ts.indices, idx)


def test_default_pool_is_the_backbones_adaptive_average_pooling():
    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(3, 4, 11)).astype(np.float32)
    pooled = pool_features(tokens, 4)
    by_hand = np.stack([tokens[..., (k * 11) // 4:-((-(k + 1) * 11) // 4)].mean(-1)
                        for k in range(4)], -1)  # windows [⌊kF/d⌋, ⌈(k+1)F/d⌉)
    np.testing.assert_allclose(pooled, by_hand, rtol=1e-6, atol=1e-6)
    torch_pool = torch.nn.functional.adaptive_avg_pool1d(torch.from_numpy(tokens), 4)
    np.testing.assert_allclose(pooled, torch_pool.numpy(), rtol=1e-6, atol=1e-6)


def test_custom_pool_is_used_and_recorded(tmp_path):
    def first_features(tokens, d):
        return tokens[..., :d]
    images = FakeImages()
    ts = extract(images, FakeBackbone(), tmp_path, pool=first_features, **OPTS)
    np.testing.assert_array_equal(ts.X, FakeBackbone().tokens(images.images)[..., :5])
    assert ts.manifest["request"]["pool"]["function"].endswith("first_features")


def test_second_call_reads_the_cache(tmp_path):
    images = FakeImages()
    first = extract(images, FakeBackbone(), tmp_path, **OPTS)
    backbone = FakeBackbone()
    second = extract(images, backbone, tmp_path, **OPTS)
    assert backbone.n_images == 0
    np.testing.assert_array_equal(second.X, first.X)


@pytest.mark.reliability
def test_crash_mid_way_resumes_with_identical_shards(tmp_path):
    images = FakeImages()
    extract(images, FakeBackbone(), tmp_path / "whole", **OPTS)
    # batches of 3 in shards of 7: batches 0-2 make shard 0, 3-5 shard 1; fail in shard 2
    with pytest.raises(RuntimeError, match="fake backbone failure"):
        extract(images, FakeBackbone(fail_after=7), tmp_path / "cut", **OPTS)
    manifest = json.loads((tmp_path / "cut" / MANIFEST).read_text())
    assert not manifest["complete"] and [e["index"] for e in manifest["shards"]] == [0, 1]
    with pytest.raises(ValueError, match="cache_dir: expected a complete cache, got 2 of 4"):
        load(tmp_path / "cut")
    backbone = FakeBackbone()
    ts = extract(images, backbone, tmp_path / "cut", **OPTS)
    assert backbone.n_images == N_IMAGES - 14  # only shards 2 and 3 recomputed
    assert shard_bytes(tmp_path / "cut") == shard_bytes(tmp_path / "whole")
    np.testing.assert_array_equal(ts.X, load(tmp_path / "whole").X)


KILLED = """
import numpy as np, sys
from cvxattn.features import extract
from tests.test_features import FakeBackbone, FakeImages, OPTS
extract(FakeImages(), FakeBackbone(hang_after=int(sys.argv[2]), marker=sys.argv[3]),
        sys.argv[1], **OPTS)
"""


@pytest.mark.reliability
@pytest.mark.parametrize("hang_after", [4, 6])  # inside shard 1; on shard 2's first batch
def test_kill_during_extraction_then_resume_gives_identical_shards(tmp_path, hang_after):
    images = FakeImages()
    extract(images, FakeBackbone(), tmp_path / "whole", **OPTS)
    cache, marker = tmp_path / "killed", tmp_path / "marker"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(cache), str(hang_after),
                             str(marker)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"extraction ended before the kill: {proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("extraction did not reach the kill point in 60 s")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    finished = hang_after // 3  # shards the killed run had written
    manifest = json.loads((cache / MANIFEST).read_text())
    assert len(manifest["shards"]) == finished and not manifest["complete"]
    backbone = FakeBackbone()
    extract(images, backbone, cache, **OPTS)
    assert backbone.n_images == N_IMAGES - 7 * finished
    assert shard_bytes(cache) == shard_bytes(tmp_path / "whole")
    np.testing.assert_array_equal(load(cache).X, load(tmp_path / "whole").X)


def _request_changes():
    other_split = FakeImages(split="test")
    return {
        "d": (FakeImages(), FakeBackbone(), dict(OPTS, d=3), "pool.d: 5 → 3"),
        "indices": (FakeImages(), FakeBackbone(), dict(OPTS, indices=[1, 2, 3]),
                    "indices.count: 23 → 3"),
        "backbone": (FakeImages(), FakeBackbone(version=2), OPTS,
                     'backbone.description.weights_sha256: "v1" → "v2"'),
        "split": (other_split, FakeBackbone(), OPTS, 'dataset.split: "train" → "test"'),
        "labels": (FakeImages(seed=5), FakeBackbone(), OPTS, "indices.labels_sha256"),
    }


@pytest.mark.reliability
@pytest.mark.parametrize("change", list(_request_changes()))
def test_changed_request_is_not_served_from_the_old_cache(tmp_path, caplog, change):
    extract(FakeImages(), FakeBackbone(), tmp_path, **OPTS)
    images, backbone, opts, reason = _request_changes()[change]
    with caplog.at_level(logging.WARNING, logger="cvxattn.features"):
        ts = extract(images, backbone, tmp_path, **opts)
    assert backbone.n_images == len(ts.y)  # everything recomputed
    assert any("redone" in r.message and reason in r.message for r in caplog.records), \
        caplog.text
    X, y = direct(images, FakeBackbone(version=backbone.version), opts["d"],
                  opts.get("indices"))
    np.testing.assert_array_equal(ts.X, X)
    np.testing.assert_array_equal(ts.y, y)
    n_shards = ts.manifest["n_shards"]
    assert len(list(tmp_path.glob("shard-*.safetensors"))) == n_shards  # old ones removed


@pytest.mark.reliability
@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_corrupt_shard_is_detected_and_recomputed(tmp_path, caplog, damage):
    images = FakeImages()
    extract(images, FakeBackbone(), tmp_path, **OPTS)
    good = shard_bytes(tmp_path)
    shard = tmp_path / "shard-00002.safetensors"
    data = bytearray(shard.read_bytes())
    if damage == "flip":
        data[-5] ^= 0x01  # one bit of a token value
        shard.write_bytes(bytes(data))
    elif damage == "truncate":
        shard.write_bytes(bytes(data[:len(data) // 2]))
    else:
        shard.unlink()
    with pytest.raises(ValueError, match="shard-00002.safetensors is missing or fails"):
        load(tmp_path)
    backbone = FakeBackbone()
    with caplog.at_level(logging.WARNING, logger="cvxattn.features"):
        extract(images, backbone, tmp_path, **OPTS)
    assert backbone.n_images == 7  # just that shard
    assert "shard-00002.safetensors is missing or fails its sha256" in caplog.text
    assert shard_bytes(tmp_path) == good


@pytest.mark.reliability
def test_unreadable_manifest_redoes_the_cache(tmp_path, caplog):
    images = FakeImages()
    extract(images, FakeBackbone(), tmp_path, **OPTS)
    (tmp_path / MANIFEST).write_text("{not json")
    backbone = FakeBackbone()
    with caplog.at_level(logging.WARNING, logger="cvxattn.features"):
        extract(images, backbone, tmp_path, **OPTS)
    assert backbone.n_images == N_IMAGES and "redone" in caplog.text


def test_only_manifest_and_safetensors_shards_no_pickle(tmp_path):
    (tmp_path / "notes.txt").write_text("the user's own file")
    extract(FakeImages(), FakeBackbone(), tmp_path, **OPTS)
    extract(FakeImages(), FakeBackbone(version=3), tmp_path, **OPTS)  # a redo keeps notes.txt
    names = sorted(p.name for p in tmp_path.rglob("*"))
    assert names == [MANIFEST, "notes.txt"] + [f"shard-0000{i}.safetensors" for i in range(4)]
    for path in tmp_path.iterdir():
        assert not path.read_bytes().startswith(b"\x80"), f"{path.name} looks like a pickle"


def test_progress_bar_reports_images_per_second(tmp_path, capsys):
    extract(FakeImages(), FakeBackbone(), tmp_path, d=5, batch_size=4, progress=True)
    assert "img/s" in capsys.readouterr().err


class NotAnImageSet:
    name = "x"


@pytest.mark.parametrize("kwargs, match", [
    (dict(d=0), "d: expected None or an integer in \\[1, 7\\]"),
    (dict(d=8), "d: expected None or an integer in \\[1, 7\\]"),
    (dict(d=2.5), "d: expected"),
    (dict(indices=[0, 23]), "indices: expected values in \\[0, 23\\)"),
    (dict(indices=[-1]), "indices: expected values"),
    (dict(indices=[]), "indices: expected a non-empty 1-D array"),
    (dict(indices=[[0, 1]]), "indices: expected a non-empty 1-D array"),
    (dict(indices=[0.5]), "indices: expected a non-empty 1-D array of integers"),
    (dict(batch_size=0), "batch_size: expected an integer ≥ 1, got 0"),
    (dict(shard_size=True), "shard_size: expected an integer ≥ 1, got True"),
    (dict(progress="yes"), "progress: expected True or False"),
    (dict(pool=3), "pool: expected None, 'pca', a TokenPCA or a callable"),
    (dict(images=NotAnImageSet()), "images: expected an ImageSet with .split"),
    (dict(backbone=object()), "backbone: expected a Backbone with .name"),
])
def test_bad_arguments_raise_value_errors_naming_them(tmp_path, kwargs, match):
    args = dict(images=FakeImages(), backbone=FakeBackbone(), cache_dir=tmp_path, d=5,
                progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        extract(**args)


def test_cache_dir_that_is_a_file_and_missing_cache(tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(ValueError, match="cache_dir: expected a folder"):
        extract(FakeImages(), FakeBackbone(), file, d=5, progress=False)
    with pytest.raises(FileNotFoundError, match="cache_dir: expected a token cache"):
        load(tmp_path / "nothing")


def test_backbone_with_wrong_token_shape_is_reported(tmp_path):
    backbone = FakeBackbone()
    backbone.n_features = 9
    with pytest.raises(ValueError, match="backbone: expected tokens of shape \\(3, 6, 9\\)"):
        extract(FakeImages(), backbone, tmp_path, **OPTS)


@pytest.mark.reliability
def test_killed_write_leftovers_are_cleaned_and_unlisted_shard_redone(tmp_path):
    images = FakeImages()
    with pytest.raises(RuntimeError):
        extract(images, FakeBackbone(fail_after=7), tmp_path, **OPTS)
    # killed after writing shard 1 but before the manifest listed it, and inside a later write
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["shards"] = manifest["shards"][:1]
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    (tmp_path / "shard-00001.safetensors").write_bytes(b"half a shard")
    (tmp_path / ".shard-00002.safetensors.x1y2.tmp").write_bytes(b"partial")
    backbone = FakeBackbone()
    extract(images, backbone, tmp_path, **OPTS)
    assert backbone.n_images == N_IMAGES - 7
    assert not list(tmp_path.glob(".*.tmp"))
    extract(images, FakeBackbone(), tmp_path / "whole", **OPTS)
    assert shard_bytes(tmp_path) == shard_bytes(tmp_path / "whole")


def _tamper_shard_file(m):
    m["shards"][0]["file"] = "../elsewhere/" + m["shards"][0]["file"]


def _tamper_n(m):
    m["n"] += 5


def _tamper_count(m):
    m["shards"][1]["count"] += 3


def _tamper_start(m):
    m["shards"][1]["start"] -= 2


def _tamper_grid(m):
    m["grid"] = m["grid"][::-1]


def _tamper_classes(m):
    m["classes"] = m["classes"][::-1]


def _tamper_type(m):
    m["d"] = True


def _tamper_section(m):  # found by tests/reliability: an AttributeError from inside the check
    m["request"]["pool"] = True


@pytest.mark.reliability
@pytest.mark.parametrize("tamper, reason", [
    (_tamper_shard_file, "shards[0].file: expected 'shard-00000.safetensors'"),
    (_tamper_n, "n: the request recorded"),
    (_tamper_count, "shards[1]: expected start"),
    (_tamper_start, "shards[1]: expected start"),
    (_tamper_grid, "grid: the request recorded"),
    (_tamper_classes, "classes: the request recorded"),
    (_tamper_type, "d: expected a positive integer"),
    (_tamper_section, "request.pool: expected an object, got True"),
], ids=lambda v: getattr(v, "__name__", "")[8:] or None)
def test_an_edited_manifest_is_refused_with_its_reason_and_redone(tmp_path, caplog, tamper,
                                                                  reason):
    """The manifest is not believed: before, a shard name with ../ was followed out of the
    folder, edited n/start/count returned uninitialised rows, an edited grid or classes was
    used as given, and extract could not repair such a cache."""
    images = FakeImages()
    good = extract(images, FakeBackbone(), tmp_path, **OPTS)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    tamper(manifest)
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="fails its check") as error:
        load(tmp_path)
    assert reason in str(error.value)
    backbone = FakeBackbone()
    with caplog.at_level(logging.WARNING, logger="cvxattn.features"):
        again = extract(images, backbone, tmp_path, **OPTS)
    assert backbone.n_images == N_IMAGES and "redone" in caplog.text
    np.testing.assert_array_equal(again.X, good.X)
    np.testing.assert_array_equal(again.y, good.y)


@pytest.mark.reliability
def test_a_shard_of_the_wrong_shape_is_refused(tmp_path):
    """A shard whose tensors do not have the rows its entry claims (here: another cache's
    shard with its checksum copied into the manifest) is refused, not read past."""
    import safetensors.numpy

    extract(FakeImages(), FakeBackbone(), tmp_path, **OPTS)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    entry = manifest["shards"][0]
    tensors = safetensors.numpy.load_file(str(tmp_path / entry["file"]))
    short = {k: v[:-1] for k, v in tensors.items()}
    data = safetensors.numpy.save(short)
    (tmp_path / entry["file"]).write_bytes(data)
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"shard shard-00000.safetensors: expected tensors"):
        load(tmp_path)


@pytest.mark.reliability
def test_images_changed_in_place_are_re_extracted(tmp_path, caplog):
    """The cache key covers the pixels: before, images edited in place (same labels, same
    indices) were served the tokens of the old images."""
    images = FakeImages()
    extract(images, FakeBackbone(), tmp_path, **OPTS)
    images.images[N_IMAGES - 1] = 255 - images.images[N_IMAGES - 1]  # in the last shard
    backbone = FakeBackbone()
    with caplog.at_level(logging.WARNING, logger="cvxattn.features"):
        again = extract(images, backbone, tmp_path, **OPTS)
    assert "images of shard" in caplog.text and "changed" in caplog.text
    last = N_IMAGES - (N_IMAGES - 1) % OPTS["shard_size"] - 1  # first image of the last shard
    assert backbone.n_images == N_IMAGES - last  # only the changed shard was recomputed
    fresh = extract(images, FakeBackbone(), tmp_path / "fresh", **OPTS)
    np.testing.assert_array_equal(again.X, fresh.X)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert all(len(entry["pixels_sha256"]) == 64 for entry in manifest["shards"])


@pytest.mark.reliability
def test_the_same_extraction_writes_the_same_bytes(tmp_path, monkeypatch):
    """Before, the manifest held the date and the command line of the run (here: two runs
    that differ only in where the cache goes)."""
    images = FakeImages()
    for name in ("a", "b"):
        monkeypatch.setattr(sys, "argv", ["cvxattn", "features", "--cache", name])
        extract(images, FakeBackbone(), tmp_path / name, **OPTS)
    files = [{p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())}
             for name in ("a", "b")]
    assert files[0] == files[1] and MANIFEST in files[0]
