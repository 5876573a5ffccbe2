"""Fitted heads on disk, without pickle: a safetensors file of tensors and a JSON description.

``save_solution(solution, "model")`` writes two files:

    model.safetensors   "blocks" Z (G, p, q) — or, for a solution held as the network's heads
                        (factorized solves, pooled collapses), "W1" (G, r, *w1) and "W2"
                        (G, r, *w2), so that Z is never formed — "intercept" b (c,), and
                        "gates" when the head is gated (its explicit gates, float64), each in
                        the dtype it was stored in; its metadata binds a copy of the JSON's
                        form, head, problem and certificate
    model.json          format version; "form" (blocks or heads); the head (registry name,
                        activation, n_gates, seed, grid/groups for FNO heads, bound sizes
                        s, d, c); the problem (loss, β, fit_intercept, pooled or token-level);
                        the certificate (objective, lower bound, gap, status, method, …); the
                        sha256, shapes and dtypes of model.safetensors; the Python, platform
                        and package versions that wrote it (no date, no run time: the same fit
                        gives the same bytes)

``load_model("model")`` rebuilds the bound head from the registry with the stored gates (no
resampling) and returns a :class:`FittedHead` whose ``decision_function``, ``predict`` and
``to_network`` give exactly the Solution's outputs.

Both files are staged as fsynced temporaries first and then renamed, tensors before JSON, so a
JSON that exists always describes a complete tensor file; a failure before the renames leaves an
existing model untouched, and the checksum turns any other mismatch into an error on load.

>>> import numpy as np, tempfile, os, torch, cvxattn as ca
>>> from cvxattn.io import save_solution, load_model
>>> rng = np.random.default_rng(0)
>>> X, y = rng.normal(size=(7, 6, 5)), np.arange(7) % 3
>>> solution = ca.solve(ca.Problem(ca.heads.MLP(), X, y, beta=0.1), tol=1e-6)
>>> path = os.path.join(tempfile.mkdtemp(), "model")
>>> _ = save_solution(solution, path)
>>> model = load_model(path)
>>> torch.equal(model.decision_function(X), solution.decision_function(X))
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from .checks import is_integer
from .heads import REGISTRY, create
from .heads.base import ACTIVATIONS, Head
from .losses import LOSSES
from .report import environment, to_jsonable
from .solvers.solution import FittedBlocks, Solution, Status

__all__ = ["FORMAT", "VERSION", "FittedHead", "load_model", "save_solution"]

FORMAT = "cvxattn.model"
# 2 added the heads form; 3 binds the head and problem into the tensor file (see _bound) and
# leaves the run's date and seconds out, so that the same fit writes the same bytes.
# Versions 1 and 2 still load.
VERSION = 3
_VERSIONS = (1, 2, 3)
_PACKAGES = ("cvxattn", "torch", "numpy", "safetensors")
_SUFFIXES = (".json", ".safetensors")
_DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class FittedHead(FittedBlocks):
    """A fitted convex head read back from disk: the bound head, Z (G, p, q), b (c,); it
    predicts and maps to its network exactly as the :class:`Solution` it was saved from.

    ``certificate`` is the stored dict (objective, lower_bound, gap, status, method, n_iter,
    seconds, certificate, n_heads); ``problem`` the stored loss, β, fit_intercept and pooled.
    """

    head: Head
    dense: torch.Tensor | None  # Z (G, p, q) when stored as blocks
    intercept: torch.Tensor  # b (c,)
    pooled: bool  # pooled logits (n, c), else token-level outputs (n, s, c)
    loss: str
    fit_intercept: bool
    certificate: dict[str, Any] = field(repr=False)
    problem: dict[str, Any] = field(repr=False)
    heads: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @cached_property
    def blocks(self) -> torch.Tensor:
        """Z (G, p, q): stored, or formed from the stored heads on first use."""
        return self.dense if self.dense is not None else self.head.blocks_from_heads(*self.heads)

    @property
    def loss_name(self) -> str:
        return self.loss


# ------------------------------------------------------------------ paths
def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(tensors, json) for ``path``; a trailing .json or .safetensors is dropped first."""
    path = Path(path)
    if path.suffix in _SUFFIXES:
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ saving
def _describe_head(head: Head) -> dict[str, Any]:
    s, d, c = head.dims
    config = head.config()
    grid = config.get("grid")
    return {"name": head.name, "activation": config["activation"],
            "n_gates": config.get("n_gates"), "seed": config["seed"],
            "grid": None if grid is None else list(grid), "groups": config.get("groups"),
            "s": s, "d": d, "c": c, "n_blocks": head.n_blocks,
            "block_shape": list(head.block_shape)}


def save_solution(solution: Solution, path: str | os.PathLike) -> Path:
    """Write ``path.safetensors`` and ``path.json`` (see the module docstring); returns the
    JSON's path. An existing model at ``path`` is replaced."""
    if not isinstance(solution, Solution):
        raise TypeError(f"solution: expected a cvxattn.Solution, got {type(solution).__name__}")
    head = solution.head
    if type(head).name not in REGISTRY or REGISTRY[type(head).name] is not type(head):
        raise ValueError(f"solution: expected a head of the registry {tuple(REGISTRY)}, got "
                         f"{type(head).__name__}")
    tensor_path, json_path = _paths(path)
    if solution.heads is not None:  # the network's heads: Z is never formed
        form = "heads"
        tensors = {"W1": solution.heads[0].detach().cpu().contiguous(),  # (G, r, *w1)
                   "W2": solution.heads[1].detach().cpu().contiguous()}  # (G, r, *w2)
    else:
        form = "blocks"
        tensors = {"blocks": solution.blocks.detach().cpu().contiguous()}  # (G, p, q)
    tensors["intercept"] = solution.intercept.detach().cpu().contiguous()  # (c,)
    if head.gated:
        tensors["gates"] = head.gates.detach().cpu().contiguous()  # e.g. (m, d) for the MLP
    semantics = {
        "form": form,
        "head": _describe_head(head),
        "problem": {"loss": solution.loss_name, "beta": solution.beta,
                    "fit_intercept": solution.fit_intercept, "pooled": solution.pooled,
                    "n": solution.n_samples},
        # what proves the fit; the run's seconds and date are not part of the model
        "certificate": {"objective": solution.objective, "lower_bound": solution.lower_bound,
                        "gap": solution.gap, "status": solution.status,
                        "method": solution.method, "method_reason": solution.method_reason,
                        "n_iter": solution.n_iter, "certificate": str(solution.certificate),
                        "proof": dataclasses.asdict(solution.certificate),
                        "n_heads": solution.n_heads},
    }
    data = _canonical(safetensors.torch.save(tensors, metadata={
        "format": FORMAT, "version": str(VERSION), "description": _bound(semantics)}))
    description = {
        "format": FORMAT,
        "version": VERSION,
        **semantics,
        "tensors": {"file": tensor_path.name, "sha256": _sha256(data),
                    "shapes": {k: list(v.shape) for k, v in tensors.items()},
                    "dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in tensors.items()}},
        "environment": environment(packages=_PACKAGES, run=False),
    }
    # rendered before anything touches the disk: a value JSON cannot hold fails here
    text = json.dumps(to_jsonable(description), indent=2, allow_nan=False,
                      ensure_ascii=False) + "\n"
    tensor_path.parent.mkdir(parents=True, exist_ok=True)
    staged: list[str] = []
    try:
        staged.append(_stage(tensor_path, data))
        staged.append(_stage(json_path, text.encode("utf-8")))
        os.replace(staged[0], tensor_path)  # tensors first: the JSON names a complete file
        os.replace(staged[1], json_path)
    finally:
        for tmp in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return json_path


def _bound(semantics: dict) -> str:
    """The form, head, problem and certificate as canonical JSON: stored in the tensor file's
    metadata (which the JSON's sha256 covers), so that an edit in the JSON alone of what
    decides the predictions (head settings, pooling, loss) or of what they claim (the gap, the
    status) is refused on load instead of believed."""
    return json.dumps(to_jsonable(semantics), sort_keys=True, separators=(",", ":"),
                      allow_nan=False, ensure_ascii=False)


def _canonical(data: bytes) -> bytes:
    """safetensors bytes with the keys of their JSON header sorted. The writer keeps the
    metadata in a hash map whose order changes from process to process, so the same tensors
    gave different bytes (and a different sha256); sorting only reorders the header, so its
    length, the padding and the data offsets are unchanged."""
    size = int.from_bytes(data[:8], "little")
    text = json.dumps(json.loads(data[8:8 + size]), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")
    if len(text) > size:  # the writer's header is compact JSON too: reordering keeps its size
        raise RuntimeError(f"safetensors header grew from {size} to {len(text)} bytes")
    return data[:8] + text.ljust(size, b" ") + data[8 + size:]


def _stage(path: Path, data: bytes) -> str:
    """``data`` in a fsynced temporary beside ``path`` (renamed over it by the caller)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


# ------------------------------------------------------------------ loading
def _float(value: Any) -> Any:
    """Undo to_jsonable's "nan"/"inf"/"-inf" for a stored float."""
    return float(value) if value in ("nan", "inf", "-inf") else value


def load_model(path: str | os.PathLike) -> FittedHead:
    """Read a model written by :func:`save_solution` (``path``, ``path.json`` or
    ``path.safetensors``).

    Both files are data from disk and are checked before anything is built from them: the
    JSON against its schema (types, ranges, known head names, losses and statuses), the
    tensor file against the JSON's sha256, the tensors' names, dtypes and shapes against
    the description and the rebuilt head, their values for NaN and inf, and (version 3) the
    head and problem in the JSON against the copy bound into the tensor file. Any failure
    is a ValueError naming the file and the field."""
    tensor_path, json_path = _paths(path)
    try:
        description = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{json_path}: expected a model description written by "
                         "save_solution, got no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{json_path}: expected JSON written by save_solution, got an "
                         f"unreadable file ({error})") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        found = description.get("format") if isinstance(description, dict) else description
        raise ValueError(f"{json_path}: expected format {FORMAT!r}, got {found!r}")
    if description.get("version") not in _VERSIONS:
        raise ValueError(f"{json_path}: expected format version 1 to {VERSION}, got "
                         f"{description.get('version')!r} (written by another cvxattn version)")
    problem = _schema_problem(description)
    if problem is not None:
        raise ValueError(f"{json_path}: {problem}")
    return _load(description, tensor_path, json_path)


def _is_number(value: Any) -> bool:
    """A float as to_jsonable writes it: a JSON number or "nan"/"inf"/"-inf"."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) \
        or value in ("nan", "inf", "-inf")


def _sizes(value: Any, length: int | None = None, low: int = 0) -> bool:
    return isinstance(value, list) and (length is None or len(value) == length) \
        and all(is_integer(v, low) for v in value)


def _schema_problem(description: dict) -> str | None:
    """Why a model description fails its schema (the field, what was expected, what was
    found), or None."""
    head, problem = description.get("head"), description.get("problem")
    tensors, certificate = description.get("tensors"), description.get("certificate")
    for name, value in (("head", head), ("problem", problem), ("tensors", tensors),
                        ("certificate", certificate)):
        if not isinstance(value, dict):
            return f"{name}: expected an object, got {_short(value)}"
    gated = head.get("activation") == "gated"
    checks = [
        ("form", description.get("form", "blocks"), lambda v: v in ("blocks", "heads"),
         "'blocks' or 'heads'"),
        ("tensors.sha256", tensors.get("sha256"),
         lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None,
         "64 hexadecimal digits"),
        ("tensors.shapes", tensors.get("shapes", {}),
         lambda v: isinstance(v, dict) and all(_sizes(s) for s in v.values()),
         "lists of sizes by tensor name"),
        ("tensors.dtypes", tensors.get("dtypes", {}),
         lambda v: isinstance(v, dict) and all(s in _DTYPES for s in v.values()),
         f"one of {tuple(_DTYPES)} by tensor name"),
        ("head.name", head.get("name"), lambda v: isinstance(v, str) and v in REGISTRY,
         f"one of {tuple(REGISTRY)}"),
        ("head.activation", head.get("activation"), lambda v: v in ACTIVATIONS,
         f"one of {ACTIVATIONS}"),
        ("head.n_gates", head.get("n_gates"),
         (lambda v: is_integer(v, 1)) if gated else (lambda v: v is None),
         "a positive integer" if gated else "null (a linear head has no gates)"),
        ("head.seed", head.get("seed"), lambda v: is_integer(v, 0), "an integer ≥ 0"),
        ("head.grid", head.get("grid"), lambda v: v is None or _sizes(v, 2, 1),
         "null or [h, w] of positive integers"),
        ("head.groups", head.get("groups"), lambda v: v is None or is_integer(v, 1),
         "null or a positive integer"),
        *[(f"head.{k}", head.get(k), lambda v: is_integer(v, 1), "a positive integer")
          for k in ("s", "d", "c", "n_blocks")],
        ("head.block_shape", head.get("block_shape"), lambda v: _sizes(v, 2, 1),
         "[p, q] of positive integers"),
        ("problem.loss", problem.get("loss"), lambda v: v in LOSSES, f"one of {LOSSES}"),
        ("problem.beta", problem.get("beta"),
         lambda v: _is_number(v) and math.isfinite(float(v)) and float(v) > 0,
         "a finite number > 0"),
        ("problem.fit_intercept", problem.get("fit_intercept"), lambda v: isinstance(v, bool),
         "true or false"),
        ("problem.pooled", problem.get("pooled"), lambda v: isinstance(v, bool),
         "true or false"),
        ("problem.n", problem.get("n", 1), lambda v: is_integer(v, 1), "a positive integer"),
        *[(f"certificate.{k}", certificate.get(k), _is_number, "a number")
          for k in ("objective", "lower_bound", "gap")],
        ("certificate.status", certificate.get("status"),
         lambda v: v in [s.value for s in Status], f"one of {[s.value for s in Status]}"),
        ("certificate.n_iter", certificate.get("n_iter"), lambda v: is_integer(v, 0),
         "an integer ≥ 0"),
    ]
    for name, value, valid, expected in checks:
        if not valid(value):
            return f"{name}: expected {expected}, got {_short(value)}"
    if not problem["pooled"] and problem["loss"] == "cross_entropy":
        return "problem.pooled: expected true for loss 'cross_entropy' (labels are pooled)"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _load(description: dict, tensor_path: Path, json_path: Path) -> FittedHead:
    try:
        data = tensor_path.read_bytes()
    except OSError as error:
        raise ValueError(f"{tensor_path}: expected the tensors described by {json_path.name}, "
                         f"got {type(error).__name__}: {error.strerror or error}") from None
    expected = description["tensors"]["sha256"]
    if _sha256(data) != expected:
        raise ValueError(f"{tensor_path}: expected sha256 {expected} (recorded in "
                         f"{json_path.name}), got {_sha256(data)}: the tensor file is corrupt "
                         "or belongs to another model")
    try:
        tensors = safetensors.torch.load(data)
        metadata = json.loads(data[8:8 + int.from_bytes(data[:8], "little")]).get(
            "__metadata__") or {}
    except Exception as error:  # the checksum matched: a file written by someone else
        raise ValueError(f"{tensor_path}: expected a safetensors file, got an unreadable one "
                         f"({error})") from None
    info, problem = description["head"], description["problem"]
    form = description.get("form", "blocks")
    if description["version"] >= 3:
        semantics = {"form": form, "head": info, "problem": problem,
                     "certificate": description["certificate"]}
        if metadata.get("description") != _bound(semantics):
            raise ValueError(f"{json_path}: head, problem, certificate or form: expected the "
                             f"description bound into {tensor_path.name}, got an edited one")
    names = (["blocks"] if form == "blocks" else ["W1", "W2"]) + ["intercept"] \
        + (["gates"] if info["activation"] == "gated" else [])
    if sorted(tensors) != sorted(names):
        raise ValueError(f"{tensor_path}: expected tensors {names}, got {sorted(tensors)}")
    recorded = description["tensors"]
    for name, tensor in tensors.items():
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in _DTYPES:
            raise ValueError(f"{tensor_path}: {name}: expected one of {tuple(_DTYPES)}, got "
                             f"{dtype}")
        for what, stored, found in (("dtype", recorded.get("dtypes", {}).get(name), dtype),
                                    ("shape", recorded.get("shapes", {}).get(name),
                                     list(tensor.shape))):
            if stored is not None and stored != found:
                raise ValueError(f"{tensor_path}: {name}: expected the {what} recorded in "
                                 f"{json_path.name}, {stored}, got {found}")
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{tensor_path}: {name}: expected finite values, got NaN or inf")
    try:  # explicit gates: bind checks them and samples nothing
        head = create(info["name"], info["activation"], seed=info["seed"],
                      grid=None if info["grid"] is None else tuple(info["grid"]),
                      groups=info["groups"], gates=tensors.get("gates"))
    except (ValueError, TypeError) as error:
        raise ValueError(f"{json_path}: head: {error}") from None
    try:
        head = head.bind(info["s"], info["d"], info["c"])
    except ValueError as error:
        raise ValueError(f"{tensor_path}: {error}") from None
    if head.gated and head.n_gates != info["n_gates"]:
        raise ValueError(f"{tensor_path}: gates: expected {info['n_gates']} gates (from "
                         f"{json_path.name}), got {head.n_gates}")
    for name, value in (("n_blocks", head.n_blocks), ("block_shape", list(head.block_shape))):
        if info[name] != value:
            raise ValueError(f"{json_path}: head.{name}: expected {value} for {head!r} bound "
                             f"to (s, d, c) = {head.dims}, got {info[name]}")
    shapes = {"intercept": (head.c,)}
    if form == "blocks":
        shapes["blocks"] = (head.n_blocks, *head.block_shape)
    else:
        r = tensors["W1"].shape[1] if tensors["W1"].ndim > 1 else -1
        shapes["W1"] = (head.n_blocks, r, *head.w1_shape)
        shapes["W2"] = (head.n_blocks, r, *head.w2_shape)
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{tensor_path}: {name}: expected shape {shape} for "
                             f"{head!r} bound to (s, d, c) = {head.dims}, got "
                             f"{tuple(tensors[name].shape)}")
    certificate = {k: _float(v) for k, v in description["certificate"].items()}
    heads = None if form == "blocks" else (tensors["W1"], tensors["W2"])
    return FittedHead(head=head, dense=tensors.get("blocks"), heads=heads,
                      intercept=tensors["intercept"],
                      pooled=problem["pooled"], loss=problem["loss"],
                      fit_intercept=problem["fit_intercept"], certificate=certificate,
                      problem=problem)
