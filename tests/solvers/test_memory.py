"""The memory plan: method choice, chunk sizes and the guard that refuses oversized requests
before allocating."""

from __future__ import annotations

import pytest

import cvxattn as ca
from cvxattn.solvers.memory import (PLANNED_HEADS, factorized_bytes, fista_bytes, plan,
                                    runtime_bytes)
from tests.helpers import labels, tokens


def _problem(head, n=7, s=10, d=4, c=6, **kwargs):
    return ca.Problem(head, tokens(0, n=n, s=s, d=d), labels(0, n=n, c=c), 0.1, **kwargs)


def test_auto_takes_dense_blocks_when_small_and_factorized_for_large_ones():
    assert plan(_problem(ca.heads.MLP())).method == "hybrid"  # FISTA, Newton/L-BFGS at full rank
    # linear attention at d = 50: one 2500 × 300 block, its SVD costs 2·10⁸ flops
    big = _problem(ca.heads.SelfAttention(), d=50)
    chosen = plan(big)
    assert chosen.method == "factorized" and 1 <= chosen.chunk_size <= big.n


def test_budget_too_small_for_fista_switches_or_refuses():
    prob = _problem(ca.heads.Mixer(activation="gated", n_gates=3), n=60000)
    need = fista_bytes(prob)
    smallest = factorized_bytes(prob, 1, False, PLANNED_HEADS, 10)
    assert smallest < need // 3  # so that the budget below separates the two
    assert plan(prob, "auto", memory_budget=need // 2).method == "factorized"
    with pytest.raises(ca.MemoryBudgetError, match="memory_budget: method='fista' needs"):
        ca.solve(prob, method="fista", memory_budget=need // 2)


def test_guard_refuses_an_oversized_request_with_a_clear_error():
    prob = _problem(ca.heads.SelfAttention(activation="gated", n_gates=2))
    with pytest.raises(ca.MemoryBudgetError, match="memory_budget: the smallest factorized"):
        ca.solve(prob, method="factorized", memory_budget=1000)
    with pytest.raises(ca.MemoryBudgetError, match="memory_budget: method='cvxpy'"):
        ca.solve(prob, method="cvxpy", memory_budget=1000)
    with pytest.raises(ValueError, match="memory_budget: expected a number of bytes"):
        ca.solve(prob, memory_budget=-1)


def test_chunks_shrink_with_the_budget_and_the_solve_still_agrees():
    prob = _problem(ca.heads.SelfAttention(activation="gated", n_gates=2, seed=1), n=30, s=5)
    roomy = plan(prob, "factorized")
    assert roomy.chunk_size == prob.n
    plans, budget, fixed = [], roomy.peak_bytes, runtime_bytes(True)
    while True:
        try:
            plans.append(plan(prob, "factorized", memory_budget=budget))
        except ca.MemoryBudgetError:
            break
        budget = fixed + int((budget - fixed) * 0.7)  # 30% less beyond the constant
    assert all(p.peak_bytes <= p.budget_bytes for p in plans)
    chunks = [p.chunk_size for p in plans]
    assert chunks == sorted(chunks, reverse=True) and chunks[-1] < prob.n
    a = ca.solve(prob, method="factorized", tol=1e-7)
    b = ca.solve(prob, method="factorized", tol=1e-7, memory_budget=plans[-1].budget_bytes)
    assert abs(a.objective - b.objective) <= 1e-7 * a.objective


def test_estimates_grow_linearly_with_the_samples():
    """Complexity check: the factorized plan's peak for the same chunk grows like n · (tokens +
    lifted data), never with n times the pass intermediates."""
    head = ca.heads.SelfAttention(activation="gated", n_gates=2)
    small, large = (plan(_problem(head, n=n, s=5), "factorized", memory_budget=2**28)
                    for n in (20, 200))
    assert large.chunk_size <= small.chunk_size * 10
    per_sample = (large.peak_bytes - small.peak_bytes) / 180
    pass_bytes = 8 * head.bind(5, 4, 6).cost(16).network
    assert per_sample < pass_bytes or large.chunk_size == 200


@pytest.mark.parametrize("name", ["mlp", "attention", "mixer", "fno", "bfno"])
@pytest.mark.parametrize("activation", ["linear", "gated"])
def test_every_head_has_a_positive_cost_model(name, activation):
    head = ca.heads.create(name, activation, grid=(2, 5) if "fno" in name else None,
                           groups=2 if name == "bfno" else None).bind(10, 4, 6)
    for r in (1, 8):
        cost = head.cost(r)
        assert cost.network > 0 and cost.network_flops > 0 and cost.map > 0
        assert cost.lift >= 0 and cost.design >= 0
    assert head.cost(8).network_flops > head.cost(1).network_flops


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_control_group_limit_caps_the_available_memory(tmp_path, version):
    """Containers and batch jobs limit memory through a cgroup, below the machine's."""
    from cvxattn.solvers.memory import _cgroup_available

    proc, mount = tmp_path / "cgroup", tmp_path / "sys"
    if version == "v2":
        proc.write_text("0::/job\n")
        group, files = mount / "job", ("memory.max", "memory.current")
    else:  # the group's directory is the mount's root, as inside a container
        proc.write_text("4:memory:/host/path/job\n0::/\n")
        group, files = mount / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes")
    group.mkdir(parents=True)
    (group / files[0]).write_text(f"{3 * 2**30}\n")
    (group / files[1]).write_text(f"{2**30}\n")
    assert _cgroup_available(str(proc), str(mount)) == 2 * 2**30
    (group / files[0]).write_text("max\n")  # v2's "no limit"
    assert _cgroup_available(str(proc), str(mount)) is None


def test_an_address_space_limit_caps_the_budget():
    """Under ``ulimit -v`` the plan sees what the limit leaves, not the machine's memory."""
    import subprocess
    import sys

    code = ("import resource, cvxattn.solvers.memory as m; "
            "size = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024; "
            "resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, resource.RLIM_INFINITY)); "
            "print(m.available_memory())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 0 < int(out.stdout) <= 2**30


def test_auto_chooses_by_the_time_model_and_says_why(monkeypatch):
    """Dense blocks unless a factorized iteration is estimated at least twice as cheap; the
    plan and the solution both carry the reason."""
    from cvxattn.solvers import timing
    from cvxattn.solvers.timing import IterationTimes

    problem = _problem(ca.heads.MLP(), n=30)
    times = timing.iteration_times(problem, 16)  # measured: a quick dense iteration
    assert times.dense > 0 and times.factorized > 0 and times.gemm_flops > 0
    chosen = plan(problem)
    assert chosen.method == "hybrid" and chosen.reason.startswith("auto: the dense blocks fit")
    assert "ms on dense blocks" in chosen.reason
    # (dense s, factorized s, SVD s): factorized only when the SVDs alone cost more than two
    # factorized iterations, and never for a dense iteration under 10 ms
    for dense, factorized, svd, expected in ((1.0, 0.3, 0.9, "factorized"),
                                             (1.0, 0.3, 0.5, "hybrid"),
                                             (0.009, 1e-6, 0.008, "hybrid")):
        monkeypatch.setattr(timing, "iteration_times", lambda problem, heads, d=dense,
                            f=factorized, v=svd: IterationTimes(d, f, 1e9, v))
        assert plan(problem).method == expected
    solution = ca.solve(problem, tol=1e-6)
    assert solution.method_reason == plan(problem).reason
    assert ca.solve(problem, method="fista").method_reason == "method='fista' requested"


def test_blocks_too_large_to_probe_go_factorized_with_the_reason():
    big = _problem(ca.heads.SelfAttention(), d=120)  # one 14400 × 720 block: 7.5e12 flops
    chosen = plan(big)
    assert chosen.method == "factorized" and "one SVD of the 1 blocks" in chosen.reason


def test_dense_blocks_over_the_budget_go_factorized_with_the_reason():
    problem = _problem(ca.heads.Mixer(activation="gated", n_gates=3), n=60000)
    chosen = plan(problem, memory_budget=fista_bytes(problem) // 2)
    assert chosen.method == "factorized" and "over the budget" in chosen.reason


def test_auto_takes_any_method_that_fits():
    """Before, auto refused a problem whose FISTA fitted the budget when the hybrid's (FISTA
    with L-BFGS's history) did not; now it takes FISTA, and the dense blocks whenever the
    factorized solver does not fit, whatever the time model prefers."""
    problem = _problem(ca.heads.MLP(activation="gated", n_gates=3), n=200)
    budget = fista_bytes(problem)
    assert fista_bytes(problem, hybrid=True) > budget
    assert factorized_bytes(problem, 1, False, PLANNED_HEADS, 10) > budget
    chosen = plan(problem, memory_budget=budget)
    assert chosen.method == "fista" and chosen.peak_bytes <= budget
    solution = ca.solve(problem, memory_budget=budget, tol=1e-6)
    assert solution.method == "fista" and solution.status == "optimal"
    with pytest.raises(ca.MemoryBudgetError, match="method='hybrid' needs"):
        ca.solve(problem, method="hybrid", memory_budget=budget)


def test_auto_falls_back_to_dense_blocks_when_factorized_does_not_fit(monkeypatch):
    from cvxattn.solvers import timing
    from cvxattn.solvers.timing import IterationTimes

    problem = _problem(ca.heads.MLP(), n=200)
    # the time model prefers the factorized solver; it does not fit, the dense blocks do
    monkeypatch.setattr(timing, "iteration_times",
                        lambda problem, heads: IterationTimes(1.0, 0.3, 1e9, 0.9))
    assert plan(problem).method == "factorized"
    budget = fista_bytes(problem, hybrid=True)
    chosen = plan(problem, memory_budget=budget)
    assert chosen.method == "hybrid" and "factorized solver does not" in chosen.reason
