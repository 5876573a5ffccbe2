"""The command line's thread policy: threads = the cores other processes leave free, looked
at again before each fit; library code never sets threads (only the command line does)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from threadpoolctl import threadpool_info

from cvxattn import cli, cpu
from cvxattn.features import extract, load
from cvxattn.table import ProtocolConfig, iter_rows, prepare
from tests.test_table import D, Backbone, Images


def test_free_cores_is_between_one_and_the_usable_cores():
    assert 1 <= cpu.free_cores(0.05) <= cpu.usable_cores()
    busy = cpu.others_busy(0.05)
    assert busy is None or busy >= 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_competing_process_is_seen_and_this_process_is_not():
    if cpu.usable_cores() < 2 or cpu.others_busy(0.3) > 0.3:
        pytest.skip("needs two cores and a quiet machine")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # the interpreter has started and spins
        assert cpu.others_busy(0.5) > 0.6  # one core's worth, less scheduling noise
    finally:
        spinner.kill()
        spinner.wait()
    # this process working hard in another thread is its own time, not another process's
    import threading

    stop = threading.Event()

    def work():
        a = torch.ones(300, 300)
        while not stop.is_set():
            a @ a

    thread = threading.Thread(target=work)
    thread.start()
    try:
        assert cpu.others_busy(0.5) < 0.6
    finally:
        stop.set()
        thread.join()


def _blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info()]


def test_the_command_line_sets_threads_and_restores_them(monkeypatch):
    before, blas_before = torch.get_num_threads(), _blas_threads()
    free = iter([2, 1, 1, 2])
    monkeypatch.setattr(cpu, "free_cores", lambda window=0.25: next(free))
    messages = []
    monkeypatch.setattr(cli, "_progress", messages.append)
    with cli._Threads(None) as threads:
        assert threads.current == 2 and torch.get_num_threads() == 2
        assert threads.check() == 1 and torch.get_num_threads() == 1
        assert all(n == 1 for n in _blas_threads())
        assert threads.check() == 1  # unchanged: nothing said
        assert threads.check() == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == before and _blas_threads() == blas_before
    assert messages == [f"threads: {n} (the cores of {cpu.usable_cores()} that other "
                        "processes leave free)" for n in (2, 1, 2)]
    with cli._Threads(1) as threads:  # --threads wins over the policy, without a word
        assert threads.check() == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_long_solves_look_again_through_their_callback(monkeypatch):
    looks = []
    monkeypatch.setattr(cpu, "free_cores", lambda window=0.25: looks.append(window) or 1)
    monkeypatch.setattr(cli, "_progress", lambda message: None)
    with cli._Threads(None) as threads:
        threads.during_solves()  # just looked: not again before INTERVAL seconds
        assert looks == [0.25]
        threads.INTERVAL = 0.0
        threads.during_solves()
        assert looks == [0.25, 0.1]
    with cli._Threads(2) as threads:  # --threads: never looks
        threads.INTERVAL = 0.0
        threads.during_solves()
        assert looks == [0.25, 0.1]


def test_rows_are_collected_with_a_check_before_each():
    checks = []

    class Recorder:
        def check(self):
            checks.append(len(rows))

    rows: list = []

    def produce():
        for k in range(3):
            rows.append(k)
            yield k

    done, stopped = cli._collect(produce(), Recorder())
    assert done == [0, 1, 2] and stopped == 0
    assert checks == [0, 1, 2, 3]  # before each row, and before learning there is none left


def test_the_library_never_sets_threads(tmp_path):
    extract(Images(40, 0, "train"), Backbone(), tmp_path / "train", d=D, progress=False)
    extract(Images(20, 1, "test"), Backbone(), tmp_path / "test", d=D, progress=False)
    config = ProtocolConfig(heads=("mlp",), activations=("linear", "gated"), beta=(1e-2,),
                            baselines=("logistic-mean", "mlp", "networks"), epochs=2,
                            lr=(1e-2,), adamw_decay=(1e-2,), out=tmp_path / "out")
    data = prepare(config, load(tmp_path / "train"), load(tmp_path / "test"))
    before = torch.get_num_threads()
    odd = 1 if before != 1 else 2  # a value nobody would set by default
    torch.set_num_threads(odd)
    try:
        blas = _blas_threads()
        checkpoints = []
        assert len(list(iter_rows(config, data, callback=checkpoints.append))) == 6
        assert checkpoints  # every convex solve calls the command line's callback
        assert torch.get_num_threads() == odd and _blas_threads() == blas
    finally:
        torch.set_num_threads(before)
