"""Fitted heads on disk, without pickle: a safetensors file of tensors and a JSON description.

``save_solution(solution, "model")`` writes two files:

    model.safetensors   "blocks" Z (G, p, q) — or, for a solution held as the network's heads
                        (factorized solves, pooled collapses), "W1" (G, r, *w1) and "W2"
                        (G, r, *w2), so that Z is never formed — "intercept" b (c,), and
                        "gates" when the head is gated (its explicit gates, float64), each in
                        the dtype it was stored in
    model.json          format version; "form" (blocks or heads); the head (registry name, activation, n_gates, seed,
                        grid/groups for FNO heads, bound sizes s, d, c); the problem (loss, β,
                        fit_intercept, pooled or token-level); the certificate (objective,
                        lower bound, gap, status, method, …); the sha256 of model.safetensors;
                        the environment that wrote it

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
import os
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from .heads import REGISTRY, BlockFNO, create
from .heads.base import Head
from .report import environment, to_jsonable
from .solvers.solution import FittedBlocks, Solution

__all__ = ["FORMAT", "VERSION", "FittedHead", "load_model", "save_solution"]

FORMAT = "cvxattn.model"
VERSION = 2  # 2 added the heads form; version 1 files (blocks) still load
_VERSIONS = (1, 2)
_PACKAGES = ("cvxattn", "torch", "numpy", "safetensors")
_SUFFIXES = (".json", ".safetensors")


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
    grid = groups = None
    if isinstance(head, BlockFNO):
        grid = list(head.grid)
        groups = head.groups if head.name == "bfno" else None
    return {"name": head.name, "activation": head.activation,
            "n_gates": head.n_gates if head.gated else None, "seed": head.seed,
            "grid": grid, "groups": groups, "s": s, "d": d, "c": c,
            "n_blocks": head.n_blocks, "block_shape": list(head.block_shape)}


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
    data = _canonical(safetensors.torch.save(tensors, metadata={"format": FORMAT,
                                                                "version": str(VERSION)}))
    description = {
        "format": FORMAT,
        "version": VERSION,
        "form": form,
        "tensors": {"file": tensor_path.name, "sha256": _sha256(data),
                    "shapes": {k: list(v.shape) for k, v in tensors.items()},
                    "dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in tensors.items()}},
        "head": _describe_head(head),
        "problem": {"loss": solution.loss_name, "beta": solution.beta,
                    "fit_intercept": solution.fit_intercept, "pooled": solution.pooled,
                    "n": solution.n_samples},
        "certificate": {"objective": solution.objective, "lower_bound": solution.lower_bound,
                        "gap": solution.gap, "status": solution.status,
                        "method": solution.method, "method_reason": solution.method_reason,
                        "n_iter": solution.n_iter,
                        "seconds": solution.seconds, "certificate": str(solution.certificate),
                        "proof": dataclasses.asdict(solution.certificate),
                        "n_heads": solution.n_heads},
        "environment": environment(packages=_PACKAGES),
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
    ``path.safetensors``). Raises ValueError naming the file when a file is missing or
    unreadable, the tensor file's sha256 differs from the JSON's, the format version is
    unknown, or a tensor's shape does not match the head."""
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
        raise ValueError(f"{json_path}: expected format version 1 or {VERSION}, got "
                         f"{description.get('version')!r} (written by another cvxattn version)")
    try:
        return _load(description, tensor_path, json_path)
    except (KeyError, TypeError) as error:
        raise ValueError(f"{json_path}: expected the fields of format version {VERSION}, got "
                         f"a description without a valid {error}") from None


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
    tensors = safetensors.torch.load(data)

    info, problem = description["head"], description["problem"]
    form = description.get("form", "blocks")
    if form not in ("blocks", "heads"):
        raise ValueError(f"{json_path}: form: expected 'blocks' or 'heads', got {form!r}")
    names = (["blocks"] if form == "blocks" else ["W1", "W2"]) + ["intercept"] \
        + (["gates"] if info["activation"] == "gated" else [])
    if sorted(tensors) != sorted(names):
        raise ValueError(f"{tensor_path}: expected tensors {names}, got {sorted(tensors)}")
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
                      pooled=bool(problem["pooled"]), loss=problem["loss"],
                      fit_intercept=bool(problem["fit_intercept"]), certificate=certificate,
                      problem=problem)
