"""Tampered files, generated: random edits of a saved model's JSON and of a token cache's
manifest (any field set to any JSON value), flipped, truncated, swapped, renamed and deleted
tensor files. The properties:

- reading a tampered file gives a one-line ValueError (or, for a missing file,
  FileNotFoundError) raised by cvxattn's own checks, or exactly the result of the untouched
  file: never a traceback from inside a dependency, never a silently different result;
- ``extract`` on a tampered cache gives exactly the tokens of a fresh extraction (it reuses
  what passes its checks and recomputes the rest).
"""

from __future__ import annotations

import json
import shutil
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st

import cvxattn as ca
from cvxattn.features import MANIFEST, extract, load
from cvxattn.io import load_model, save_solution
from tests.helpers import TEN, labels, tokens
from tests.test_features import OPTS, FakeBackbone, FakeImages

pytestmark = pytest.mark.reliability

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
    | st.text(max_size=12) | st.sampled_from(["../x", "/etc/passwd", "shard-00000.safetensors",
                                              "nan", "inf", "gated", "float16"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=6)


def leaves(value, path=()):
    """Paths of every node of a JSON value (containers too: they can be replaced whole)."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, (*path, i))


def edited(document, path, value):
    """A copy of ``document`` with the node at ``path`` set to ``value`` (or deleted when
    ``value`` is the marker ``DELETE``)."""
    document = json.loads(json.dumps(document))
    if not path:
        return value
    node = document
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return document


DELETE = object()
edits = st.one_of(json_values, st.just(DELETE))


def refused(error: BaseException, *allowed: type) -> None:
    """``error`` is one of ``allowed``, one line, raised by cvxattn (not inside a dependency)."""
    assert isinstance(error, allowed), f"{type(error).__name__}: {error}"
    where = traceback.extract_tb(error.__traceback__)[-1].filename
    assert "/cvxattn/" in where, f"raised inside a dependency ({where}): {error}"
    assert "\n" not in str(error)
    event(f"refused: {type(error).__name__}")


# ------------------------------------------------------------------ saved models
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Two saved models (blocks and heads forms), their files' bytes and their outputs."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, head in (TEN[9], TEN[3]):  # bfno-gated (blocks), fno-linear (heads: collapse)
        solution = ca.solve(ca.Problem(head, tokens(0), labels(0), beta=0.05), tol=1e-6)
        save_solution(solution, root / name)
        files = {suffix: (root / name).with_suffix(suffix).read_bytes()
                 for suffix in (".json", ".safetensors")}
        out[name] = (root / name, files, solution.decision_function(tokens(3)))
    return out


def _restore(path: Path, files: dict) -> None:
    for suffix, data in files.items():
        path.with_suffix(suffix).write_bytes(data)


def _read(path: Path, expected: torch.Tensor) -> None:
    try:
        model = load_model(path)
    except (ValueError, TypeError, KeyError, FileNotFoundError) as error:
        refused(error, ValueError)
        return
    assert torch.equal(model.decision_function(tokens(3)), expected), "a different model"
    event("read back unchanged")


@given(which=st.sampled_from(["bfno-gated", "fno-linear"]), data=st.data())
def test_edited_model_description(saved, which, data):
    path, files, expected = saved[which]
    _restore(path, files)
    description = json.loads(files[".json"])
    where = data.draw(st.sampled_from(list(leaves(description))), label="field")
    value = data.draw(edits, label="value")
    if where == () and value is DELETE:
        value = None
    changed = edited(description, where, value)
    path.with_suffix(".json").write_text(json.dumps(changed, allow_nan=True))
    _read(path, expected)


@given(which=st.sampled_from(["bfno-gated", "fno-linear"]), data=st.data())
def test_damaged_model_tensors(saved, which, data):
    path, files, expected = saved[which]
    _restore(path, files)
    tensors = bytearray(files[".safetensors"])
    damage = data.draw(st.sampled_from(["flip", "truncate", "append", "delete", "swap"]),
                       label="damage")
    target = path.with_suffix(".safetensors")
    if damage == "flip":
        tensors[data.draw(st.integers(0, len(tensors) - 1), label="byte")] ^= \
            data.draw(st.integers(1, 255), label="mask")
        target.write_bytes(bytes(tensors))
    elif damage == "truncate":
        target.write_bytes(bytes(tensors[:data.draw(st.integers(0, len(tensors) - 1))]))
    elif damage == "append":
        target.write_bytes(bytes(tensors) + data.draw(st.binary(min_size=1, max_size=64)))
    elif damage == "delete":
        target.unlink()
    else:  # the other model's tensors under this model's description
        other = next(v for k, v in saved.items() if k != which)
        target.write_bytes(other[1][".safetensors"])
    _read(path, expected)


# ------------------------------------------------------------------ token caches
@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A complete cache (23 images, 4 shards), its files' bytes and its tokens."""
    root = tmp_path_factory.mktemp("cache") / "tokens"
    images = FakeImages()
    good = extract(images, FakeBackbone(), root, **OPTS)
    files = {p.name: p.read_bytes() for p in root.iterdir()}
    return root, images, files, good


def _restore_cache(root: Path, files: dict) -> None:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)


def _check_cache(root: Path, images, good) -> None:
    """load: refused by cvxattn, or the good tokens; extract: the good tokens."""
    try:
        tokens_ = load(root)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as error:
        refused(error, ValueError, FileNotFoundError)
    else:
        np.testing.assert_array_equal(tokens_.X, good.X)
        np.testing.assert_array_equal(tokens_.y, good.y)
        assert tokens_.classes == good.classes and tokens_.grid == good.grid
        event("read back unchanged")
    again = extract(images, FakeBackbone(), root, **OPTS)
    np.testing.assert_array_equal(again.X, good.X)
    np.testing.assert_array_equal(again.y, good.y)
    np.testing.assert_array_equal(again.indices, good.indices)


@given(data=st.data())
def test_edited_cache_manifest(cache, data):
    root, images, files, good = cache
    _restore_cache(root, files)
    manifest = json.loads(files[MANIFEST])
    where = data.draw(st.sampled_from(list(leaves(manifest))), label="field")
    value = data.draw(edits, label="value")
    if where == () and value is DELETE:
        value = None
    (root / MANIFEST).write_text(json.dumps(edited(manifest, where, value), allow_nan=True))
    _check_cache(root, images, good)


@given(data=st.data())
def test_damaged_cache_shards(cache, data):
    root, images, files, good = cache
    _restore_cache(root, files)
    shards = sorted(name for name in files if name.startswith("shard-"))
    damage = data.draw(st.sampled_from(["flip", "truncate", "delete", "swap", "rename",
                                        "manifest-deleted", "stale-temporary"]), label="damage")
    first = root / data.draw(st.sampled_from(shards), label="shard")
    if damage == "flip":
        raw = bytearray(first.read_bytes())
        raw[data.draw(st.integers(0, len(raw) - 1), label="byte")] ^= 0x40
        first.write_bytes(bytes(raw))
    elif damage == "truncate":
        first.write_bytes(first.read_bytes()[:data.draw(st.integers(0, 200), label="size")])
    elif damage == "delete":
        first.unlink()
    elif damage == "swap":
        second = root / data.draw(st.sampled_from([s for s in shards if s != first.name]))
        a, b = first.read_bytes(), second.read_bytes()
        first.write_bytes(b)
        second.write_bytes(a)
    elif damage == "rename":
        first.rename(root / "shard-99999.safetensors")
    elif damage == "manifest-deleted":
        (root / MANIFEST).unlink()
    else:  # what a killed write leaves behind
        (root / f".{first.name}.abc123.tmp").write_bytes(b"half")
    _check_cache(root, images, good)
