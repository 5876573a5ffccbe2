"""Saving and loading fitted heads: exact round trips, checksums, atomic overwrite, no pickle."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import cvxattn as ca
from cvxattn.io import FORMAT, FittedHead, load_model, save_solution
from tests.helpers import TEN, TEN_IDS, C, D, S, labels, tokens

BETA = 0.05
_SOLVED: dict[str, ca.Solution] = {}


def solved(name: str, head) -> ca.Solution:
    """The tiny cross-entropy problem of ``head``, solved once per session."""
    if name not in _SOLVED:
        problem = ca.Problem(head, tokens(0), labels(0), beta=BETA)
        _SOLVED[name] = ca.solve(problem, tol=1e-6, max_iter=300)
    return _SOLVED[name]


@pytest.fixture(params=TEN, ids=TEN_IDS)
def solution(request):
    name, head = request.param
    return solved(name, head)


@pytest.fixture
def model_path(tmp_path):
    return tmp_path / "model"


def test_round_trip_is_exact(solution, model_path):
    json_path = save_solution(solution, model_path)
    assert json_path == model_path.with_name("model.json")
    model = load_model(model_path)
    assert isinstance(model, FittedHead)
    X = tokens(seed=5, n=11)  # new tokens, another n
    assert torch.equal(model.decision_function(X), solution.decision_function(X))
    assert torch.equal(model.predict(X), solution.predict(X))
    assert torch.equal(model.blocks, solution.blocks)
    assert model.blocks.dtype == torch.float64
    assert torch.equal(model.intercept, solution.intercept)
    assert model.head.dims == solution.head.dims and repr(model.head) == repr(solution.head)
    if solution.head.gated:
        assert torch.equal(model.head.gates, solution.head.gates)
    with torch.no_grad():
        assert torch.equal(model.to_network()(X), solution.to_network()(X))
    assert model.certificate["gap"] == solution.gap
    assert model.certificate["status"] == solution.status
    assert model.certificate["n_heads"] == solution.n_heads


def test_gated_head_keeps_stored_gates_not_seed(model_path):
    """Gates given explicitly (not from the seed) come back as stored, never resampled."""
    gates = torch.as_tensor(np.random.default_rng(7).normal(size=(3, D)))
    problem = ca.Problem(ca.heads.MLP(activation="gated", gates=gates, seed=0), tokens(0),
                         labels(0), beta=BETA)
    solution = ca.solve(problem, tol=1e-6, max_iter=300)
    save_solution(solution, model_path)
    model = load_model(model_path)
    assert torch.equal(model.head.gates, gates.to(torch.float64))
    X = tokens(seed=3)
    assert torch.equal(model.decision_function(X), solution.decision_function(X))


def test_squared_token_level_round_trip(model_path):
    y = torch.as_tensor(np.random.default_rng(2).normal(size=(7, S, 3)))
    head = ca.heads.SelfAttention(activation="gated", n_gates=2, seed=4)
    problem = ca.Problem(head, tokens(0), y, beta=0.5, loss="squared", fit_intercept=False)
    solution = ca.solve(problem, tol=1e-6)
    save_solution(solution, str(model_path) + ".json")  # a suffix given is dropped
    model = load_model(str(model_path) + ".safetensors")
    assert not model.pooled and model.loss == "squared" and not model.fit_intercept
    X = tokens(seed=9)
    out = model.decision_function(X)
    assert out.shape == (7, S, 3)
    assert torch.equal(out, solution.decision_function(X))
    assert torch.equal(model.predict(X), solution.predict(X))
    net, reference = model.to_network(), solution.to_network()
    assert net.intercept is None
    with torch.no_grad():
        assert torch.equal(net(X), reference(X))


def test_files_are_json_and_safetensors_only(model_path):
    name, head = TEN[6]  # attention-gated
    save_solution(solved(name, head), model_path)
    files = sorted(os.listdir(model_path.parent))
    assert files == ["model.json", "model.safetensors"]  # no pickle, no temporaries
    description = json.loads(model_path.with_suffix(".json").read_text())
    assert description["format"] == FORMAT and description["version"] == 3
    assert description["form"] == "blocks"
    assert description["head"]["name"] == "attention"
    assert description["head"]["n_gates"] == 2
    assert description["problem"] == {"loss": "cross_entropy", "beta": BETA,
                                      "fit_intercept": True, "pooled": True, "n": 7}
    assert "versions" in description["environment"]
    assert description["certificate"]["method_reason"].startswith("auto: ")
    tensors = safetensors.torch.load_file(model_path.with_suffix(".safetensors"))
    assert sorted(tensors) == ["blocks", "gates", "intercept"]
    assert all(t.dtype == torch.float64 for t in tensors.values())


def test_fno_description_has_grid_and_groups(model_path):
    name, head = TEN[9]  # bfno-gated
    save_solution(solved(name, head), model_path)
    info = json.loads(model_path.with_suffix(".json").read_text())["head"]
    assert (info["grid"], info["groups"], info["s"], info["d"], info["c"]) == \
        ([2, 5], 2, S, D, C)


@pytest.fixture
def saved(model_path):
    name, head = TEN[0]  # mlp-linear
    save_solution(solved(name, head), model_path)
    return model_path


@pytest.mark.reliability
def test_missing_files(saved):
    os.remove(saved.with_suffix(".safetensors"))
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        load_model(saved)
    os.remove(saved.with_suffix(".json"))
    with pytest.raises(ValueError, match=r"model\.json: .*no such file"):
        load_model(saved)


@pytest.mark.reliability
def test_corrupt_tensor_file(saved):
    path = saved.with_suffix(".safetensors")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one flipped bit in the last float
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.safetensors: expected sha256 .* corrupt"):
        load_model(saved)


@pytest.mark.reliability
def test_swapped_tensor_file(saved, tmp_path):
    name, head = TEN[1]  # attention-linear
    save_solution(solved(name, head), tmp_path / "other")
    os.replace(tmp_path / "other.safetensors", saved.with_suffix(".safetensors"))
    with pytest.raises(ValueError, match="another model"):
        load_model(saved)


def test_unknown_format_version(saved):
    path = saved.with_suffix(".json")
    description = json.loads(path.read_text())
    description["version"] = 99
    path.write_text(json.dumps(description))
    with pytest.raises(ValueError, match=r"model\.json: expected format version 1 to 3, got 99"):
        load_model(saved)


@pytest.mark.reliability
def test_block_shape_mismatch(saved):
    """A consistent checksum over tensors of the wrong shape is still refused."""
    tensor_path, json_path = saved.with_suffix(".safetensors"), saved.with_suffix(".json")
    with safetensors.safe_open(tensor_path, "pt") as f:
        metadata = f.metadata()  # the description bound into the file stays as it was
    tensors = safetensors.torch.load_file(tensor_path)
    tensors["blocks"] = tensors["blocks"][:, :-1]  # (1, d - 1, c)
    safetensors.torch.save_file(tensors, tensor_path, metadata=metadata)
    description = json.loads(json_path.read_text())
    description["tensors"]["sha256"] = hashlib.sha256(tensor_path.read_bytes()).hexdigest()
    description["tensors"]["shapes"]["blocks"] = [1, D - 1, C]
    json_path.write_text(json.dumps(description))
    with pytest.raises(ValueError, match=rf"model\.safetensors: blocks: expected shape "
                                         rf"\(1, {D}, {C}\).*got \(1, {D - 1}, {C}\)"):
        load_model(saved)


@pytest.mark.reliability
@pytest.mark.parametrize("failing", [1, 2], ids=["tensor-write", "json-write"])
def test_failed_overwrite_keeps_old_model(saved, monkeypatch, failing):
    """The tensor (or JSON) write raises midway, after its bytes went out but before the
    fsync: the old pair stays valid, byte for byte."""
    before = {p: p.read_bytes() for p in saved.parent.iterdir()}
    X = tokens(seed=4)
    old = load_model(saved).decision_function(X)
    calls = []
    fsync = os.fsync

    def fail(fd):
        calls.append(fd)
        if len(calls) == failing:
            raise OSError(28, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", fail)  # 1st call: the tensor file, 2nd: the JSON
    name, head = TEN[5]  # mlp-gated
    with pytest.raises(OSError, match="No space"):
        save_solution(solved(name, head), saved)
    monkeypatch.undo()
    after = {p: p.read_bytes() for p in saved.parent.iterdir()}
    assert after == before  # same files, same bytes, no temporaries left
    assert torch.equal(load_model(saved).decision_function(X), old)


def test_overwrite_replaces_model(saved):
    name, head = TEN[5]  # mlp-gated
    save_solution(solved(name, head), saved)
    model = load_model(saved)
    assert model.head.gated and sorted(os.listdir(saved.parent)) == ["model.json",
                                                                      "model.safetensors"]


def test_wrong_input_shape(saved):
    with pytest.raises(ValueError, match=rf"X: expected tokens of shape \(n, {S}, {D}\)"):
        load_model(saved).decision_function(tokens(d=D + 1))


def test_no_pickle_in_the_code():
    from cvxattn import io

    source = Path(io.__file__).read_text(encoding="utf-8")
    for banned in (r"import pickle", r"(?<!safetensors\.)torch\.(save|load)\(", r"np\.load\(",
                   r"allow_pickle"):
        assert not re.search(banned, source), banned


def test_a_solution_of_heads_is_saved_as_heads_and_version_1_files_still_load(model_path):
    """Factorized solutions and pooled collapses keep the network's heads: saved as W1, W2
    (Z never formed), read back to the same outputs; a version-1 file (blocks) loads too."""
    problem = ca.Problem(ca.heads.BlockFNO(groups=2, grid=(2, 5)), tokens(0), labels(0),
                         beta=BETA)
    solution = ca.solve(problem, tol=1e-6)
    assert solution.heads is not None
    save_solution(solution, model_path)
    description = json.loads(model_path.with_suffix(".json").read_text())
    assert description["form"] == "heads"
    tensors = safetensors.torch.load_file(model_path.with_suffix(".safetensors"))
    assert sorted(tensors) == ["W1", "W2", "intercept"]
    model = load_model(model_path)
    X = tokens(seed=5, n=11)
    assert torch.equal(model.decision_function(X), solution.decision_function(X))
    assert torch.equal(model.blocks, solution.blocks)
    # the same model written as version 1 (blocks only) still loads
    old = {"blocks": solution.blocks.contiguous(), "intercept": solution.intercept}
    data = safetensors.torch.save(old)
    model_path.with_suffix(".safetensors").write_bytes(data)
    description.update(version=1)
    description.pop("form")
    description["tensors"]["sha256"] = hashlib.sha256(data).hexdigest()
    model_path.with_suffix(".json").write_text(json.dumps(description))
    legacy = load_model(model_path)
    assert legacy.heads is None
    torch.testing.assert_close(legacy.decision_function(X), solution.decision_function(X),
                               atol=1e-12, rtol=0)


def test_the_tensor_file_is_the_same_bytes_whatever_order_the_writer_chose(model_path):
    """safetensors keeps its metadata in a hash map whose order changes between processes, so
    two identical fits wrote different bytes. The header is canonical now (sorted keys)."""
    from cvxattn.io import _canonical

    tensors = {"b": torch.zeros(3), "a": torch.ones(2, 2, dtype=torch.float64)}
    data = safetensors.torch.save(tensors, metadata={"format": FORMAT, "version": "2"})
    size = int.from_bytes(data[:8], "little")
    header = data[8:8 + size].decode()
    one = f'"format":"{FORMAT}","version":"2"'
    two = f'"version":"2","format":"{FORMAT}"'
    assert one in header or two in header
    # the same file as the writer may emit it in another process: metadata in either order
    orders = [data[:8] + header.replace(two, one).encode() + data[8 + size:],
              data[:8] + header.replace(one, two).encode() + data[8 + size:]]
    assert orders[0] != orders[1]
    assert _canonical(orders[0]) == _canonical(orders[1])
    loaded = safetensors.torch.load(_canonical(orders[1]))
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())

    # and what save_solution writes is that canonical form
    save_solution(solved(*TEN[5]), model_path)
    written = (model_path.parent / "model.safetensors").read_bytes()
    assert written == _canonical(written)


def _edit(field: str, value):
    def edit(description):
        *path, last = field.split(".")
        node = description
        for key in path:
            node = node[key]
        node[last] = value
    edit.__name__ = f"{field}={value!r}"
    return edit


@pytest.mark.reliability
@pytest.mark.parametrize("edit, message", [
    (_edit("head.grid", [5, 2]), "head, problem, certificate or form: expected the description"),
    (_edit("head.groups", 1), "head, problem, certificate or form: expected the description"),
    (_edit("head.seed", 3), "head, problem, certificate or form: expected the description"),
    (_edit("problem.pooled", False), "problem.pooled: expected true for loss 'cross_entropy'"),
    (_edit("problem.loss", "squared"),
     "head, problem, certificate or form: expected the description"),
    (_edit("problem.loss", "hinge"), "problem.loss: expected one of"),
    (_edit("problem.beta", "0.05"), "problem.beta: expected a finite number > 0, got '0.05'"),
    (_edit("problem.fit_intercept", 1), "problem.fit_intercept: expected true or false"),
    (_edit("head.n_gates", True), "head.n_gates: expected a positive integer, got True"),
    (_edit("head.name", "transformer"), "head.name: expected one of"),
    (_edit("head.name", ["mlp"]), "head.name: expected one of"),  # was a TypeError (unhashable)
    (_edit("head.s", -10), "head.s: expected a positive integer"),
    (_edit("certificate.status", "great"), "certificate.status: expected one of"),
    (_edit("certificate.gap", 0.0), "head, problem, certificate or form: expected the"),
    (_edit("certificate.gap", [0]), "certificate.gap: expected a number"),
    (_edit("tensors.sha256", "../model"), "tensors.sha256: expected 64 hexadecimal digits"),
    (_edit("tensors.dtypes", {"blocks": "object"}), "tensors.dtypes: expected one of"),
    (_edit("head", None), "head: expected an object, got None"),
], ids=lambda v: getattr(v, "__name__", None) or "")
def test_an_edited_description_is_refused_by_name(model_path, edit, message):
    """The JSON is data from disk: before, edited head settings or pooling changed the
    predictions silently, and unknown losses and wrong types were accepted."""
    name, head = TEN[9]  # bfno-gated: grid, groups, gates
    save_solution(solved(name, head), model_path)
    path = model_path.with_suffix(".json")
    description = json.loads(path.read_text())
    edit(description)
    path.write_text(json.dumps(description))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": " + re.escape(message)):
        load_model(model_path)


@pytest.mark.reliability
def test_non_finite_tensors_are_refused(saved):
    """NaN blocks under a matching checksum and description loaded and predicted NaN."""
    tensor_path, json_path = saved.with_suffix(".safetensors"), saved.with_suffix(".json")
    with safetensors.safe_open(tensor_path, "pt") as f:
        metadata = f.metadata()
    tensors = safetensors.torch.load_file(tensor_path)
    tensors["blocks"][0, 0, 0] = float("nan")
    safetensors.torch.save_file(tensors, tensor_path, metadata=metadata)
    description = json.loads(json_path.read_text())
    description["tensors"]["sha256"] = hashlib.sha256(tensor_path.read_bytes()).hexdigest()
    json_path.write_text(json.dumps(description))
    with pytest.raises(ValueError, match=r"model\.safetensors: blocks: expected finite values"):
        load_model(saved)


@pytest.mark.reliability
def test_two_fits_of_the_same_problem_write_the_same_bytes(tmp_path):
    """Before, the JSON held the solve's seconds and the date, so two identical fits wrote
    different files."""
    name, head = TEN[6]  # attention-gated
    files = []
    for k in range(2):
        problem = ca.Problem(head, tokens(0), labels(0), beta=BETA)
        save_solution(ca.solve(problem, method="fista", tol=1e-6, max_iter=300),
                      tmp_path / f"fit{k}")
        files.append([(tmp_path / f"fit{k}{suffix}").read_bytes()
                      for suffix in (".json", ".safetensors")])
    assert files[0][0].replace(b"fit0", b"fit1") == files[1][0] and files[0][1] == files[1][1]
