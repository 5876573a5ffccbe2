"""The ``cvxattn`` command (src/cvxattn/cli.py) and the table/report helpers it uses."""

import contextlib
import dataclasses
import io
import json
import math
import os
import subprocess
import sys

import pytest

from cvxattn import cli, report
from cvxattn.digits import DigitsConfig
from cvxattn.heads import DEFAULT_GATES
from cvxattn.report import Column

TOL = 1e-6


def run_main(argv):
    """(exit status, stdout, stderr) of ``cli.main(argv)``; SystemExit becomes its code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def parse_table(text):
    """The rows of the first Markdown table in ``text`` as dicts keyed by the headings."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    header, rule, body = cells[0], cells[1], cells[2:]
    assert all(set(c) <= set(":-") for c in rule)
    return [dict(zip(header, row)) for row in body]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("digits")
    argv = ["digits", "--n-train", "120", "--n-test", "60", "--tol", str(TOL), "--beta",
            "1e-3", "--baselines", "logistic-tokens", "--out", str(out_dir)]
    code, stdout, stderr = run_main(argv)
    return code, stdout, stderr, out_dir


def test_digits_prints_ten_certified_rows_and_the_baseline(small_run):
    code, stdout, stderr, _ = small_run
    assert code == 0, stderr
    rows = parse_table(stdout)
    heads = [r for r in rows if r["fitted by"] == "cvxattn"]
    assert len(heads) == 10 and len(rows) == 11
    assert {(r["head"], r["activation"]) for r in heads} == {
        (h, a) for h in ("mlp", "attention", "mixer", "fno", "bfno")
        for a in ("linear", "gated")}
    for r in heads:
        assert float(r["rel. gap"]) <= TOL and r["status"] == "optimal"
        assert 0 <= float(r["test acc %"]) <= 100 and int(r["heads (rank)"]) >= 1
        assert float(r["train objective"]) > 0 and float(r["fit s"]) >= 0
    baseline = rows[-1]
    assert baseline["head"] == "logistic (tokens)"
    assert baseline["rel. gap"] == report.MISSING and baseline["train objective"] == report.MISSING
    assert "120 training images (96 fit + 24 validation) and 60 test images" in stdout
    assert "total wall time" in stdout
    assert "[10/10] bfno gated" in stderr  # progress goes to stderr


def test_digits_out_writes_the_tables_files(small_run):
    code, stdout, _, out_dir = small_run
    assert code == 0
    assert sorted(os.listdir(out_dir)) == ["accuracy.png", "gap.png", "table.csv",
                                           "table.json", "table.md"]  # no temporaries left

    def no_constants(name):
        raise ValueError(f"not strict JSON: {name}")

    doc = json.loads((out_dir / "table.json").read_text(), parse_constant=no_constants)
    manifest = doc["manifest"]
    assert manifest["command"].startswith("cvxattn digits --n-train 120 --n-test 60")
    assert {"cvxattn", "torch", "numpy", "scikit-learn"} <= set(manifest["versions"])
    assert manifest["date"][:4].isdigit() and "T" in manifest["date"]
    assert doc["config"]["n_train"] == 120 and doc["config"]["tol"] == TOL
    printed = parse_table(stdout)
    assert len(doc["rows"]) == len(printed) == 11
    for row, shown in zip(doc["rows"], printed):
        assert row["head"] == shown["head"]
        if row["gap"] is not None:
            assert row["gap"] <= TOL and f"{row['gap']:.1e}" == shown["rel. gap"]
            assert row["lower_bound"] <= row["objective"]
    markdown = (out_dir / "table.md").read_text()
    assert parse_table(markdown) == printed
    assert "cvxattn digits --n-train 120" in markdown and "torch" in markdown


def test_help_is_complete_and_exits_zero():
    code, stdout, _ = run_main(["digits", "--help"])
    assert code == 0
    for f in dataclasses.fields(DigitsConfig):
        assert "--" + f.name.replace("_", "-") in stdout
    assert "(default: 0.001)" in stdout and "--no-standardize" in stdout
    code, stdout, _ = run_main(["--help"])
    assert code == 0 and "digits" in stdout
    code, stdout, _ = run_main(["--version"])
    assert code == 0 and stdout.startswith("cvxattn ")


@pytest.mark.parametrize("argv, message", [
    (["--beta", "-1"], "argument --beta: expected distinct finite numbers > 0"),
    (["--beta", "nan"], "argument --beta: expected distinct finite numbers > 0"),
    (["--heads", "mlp", "vit"], "argument --heads: invalid choice: 'vit'"),
    (["--activations", "relu"], "argument --activations: invalid choice: 'relu'"),
    (["--tol", "abc"], "argument --tol: invalid float value: 'abc'"),
    (["--n-gates", "mlp"], "argument --n-gates: expected KEY=VALUE, got 'mlp'"),
    (["--n-gates", "vit=3"], "argument --n-gates: expected HEAD=M"),
    (["--n-gates", "mlp=x"], "argument --n-gates: expected KEY=VALUE with an integer VALUE"),
    (["--bfno-groups", "3"], "argument --bfno-groups: expected B dividing"),
    (["--n-train", "5"], "argument --n-train: expected an integer ≥ 10"),
    (["--n-train", "5000"], "argument --n-train: expected at most 1347"),
    (["--threads", "0"], "argument --threads: expected a positive integer"),
    (["--no-such-option"], "unrecognized arguments: --no-such-option"),
])
def test_bad_arguments_exit_2_with_a_one_line_error(argv, message):
    code, stdout, stderr = run_main(["digits", *argv])
    assert code == 2 and stdout == ""
    assert message in stderr
    assert stderr.startswith("usage: cvxattn")


def test_out_must_be_a_directory(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("")
    code, _, stderr = run_main(["digits", "--out", str(target)])
    assert code == 2 and "argument --out: expected a folder, got the file" in stderr


def test_ctrl_c_prints_the_rows_done_so_far(monkeypatch, tmp_path):
    from cvxattn import table

    fit_convex = table.fit_convex
    calls = []

    def interrupted_on_the_second_fit(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return fit_convex(*args, **kwargs)

    monkeypatch.setattr(table, "fit_convex", interrupted_on_the_second_fit)
    code, stdout, _ = run_main(["digits", "--heads", "mlp", "--n-train", "60", "--n-test",
                                "30", "--beta", "1e-3", "--baselines", "none", "--out",
                                str(tmp_path)])
    assert code == 130
    assert [r["activation"] for r in parse_table(stdout)] == ["linear"]
    assert "interrupted: 1 rows are done." in stdout
    assert "interrupted: 1 rows are done." in json.loads(
        (tmp_path / "table.json").read_text())["notes"]


def test_sigterm_keeps_the_rows_done_so_far_and_puts_the_handler_back(monkeypatch, tmp_path):
    """`kill` stops a table like Ctrl-C does (a background job started by a script ignores
    Ctrl-C): the rows done are printed and written, the exit status is 128 + SIGTERM."""
    import os
    import signal

    from cvxattn import table

    fit_convex = table.fit_convex
    calls = []

    def killed_on_the_second_fit(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return fit_convex(*args, **kwargs)

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(table, "fit_convex", killed_on_the_second_fit)
    code, stdout, _ = run_main(["digits", "--heads", "mlp", "--n-train", "60", "--n-test",
                                "30", "--beta", "1e-3", "--baselines", "none", "--out",
                                str(tmp_path)])
    assert code == 128 + signal.SIGTERM
    assert [r["activation"] for r in parse_table(stdout)] == ["linear"]
    assert "interrupted: 1 rows are done." in json.loads(
        (tmp_path / "table.json").read_text())["notes"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_command_is_required():
    code, _, stderr = run_main([])
    assert code == 2 and "required: COMMAND" in stderr


def test_options_are_derived_from_the_config_dataclass():
    parser = cli.build_parser()
    args = parser.parse_args(["digits", "--heads", "mixer", "fno", "--beta", "1e-2", "1e-3",
                              "--n-gates", "attention=3", "--baselines", "none", "--out", "x"])
    config = cli.config_from_args(DigitsConfig, args)
    assert config == DigitsConfig(heads=("mixer", "fno"), beta=(1e-2, 1e-3),
                                  n_gates={**DEFAULT_GATES, "attention": 3},
                                  baselines=("none",), out="x")
    untouched = cli.config_from_args(DigitsConfig, parser.parse_args(["digits"]))
    assert untouched == DigitsConfig()


def test_python_dash_m_runs_the_command():
    result = subprocess.run([sys.executable, "-m", "cvxattn", "digits", "--help"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "usage: cvxattn digits" in result.stdout


# ------------------------------------------------------------------------ report
def test_format_table_aligns_columns_and_marks_missing_values():
    rows = [{"name": "a", "x": 1.5, "n": 3}, {"name": "longer|name", "x": None, "n": 12}]
    text = report.format_table(rows, [Column("name"), Column("x", "x value", ".2f"), "n"])
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1  # every line padded to one width
    assert lines[0] == "| name         | x value |   n |"
    assert lines[1] == "| :----------- | ------: | --: |"
    assert lines[2] == "| a            |    1.50 |   3 |"
    assert lines[3] == r"| longer\|name |       — |  12 |"
    assert report.format_table(rows).splitlines()[0] == "| name         |   x |   n |"


def test_json_is_strict_and_files_are_replaced_atomically(tmp_path):
    path = report.write_json(tmp_path / "sub" / "r.json",
                             {"a": (1, 2), "b": math.inf, "c": math.nan, "p": tmp_path})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": "inf", "c": "nan",
                                            "p": str(tmp_path)}
    report.write_atomic(path, "second")
    assert path.read_text() == "second" and os.listdir(path.parent) == ["r.json"]


@pytest.mark.reliability
@pytest.mark.parametrize("command, option", [
    ("features", "--cache"), ("features", "--model-cache"), ("run", "--cache"),
    ("run", "--model-cache"), ("fit", "--out"), ("run", "--out"), ("table", "--out"),
    ("digits", "--out"),
])
@pytest.mark.parametrize("place", ["file", "under-file", "unwritable"])
def test_paths_that_cannot_be_written_are_usage_errors_before_any_work(tmp_path, command,
                                                                       option, place):
    """Before, `features --cache FILE` and `run --cache FILE` ended in a traceback from
    os.mkdir, after the data set was read; now every such path is checked first."""
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    cache = tmp_path / "cache"
    cache.mkdir()  # a folder that is no token cache: its check comes after the path's
    path = {"file": afile, "under-file": afile / "sub",
            "unwritable": "/proc/cvxattn-cannot-be-here"}[place]
    required = {"fit": ["--features", str(cache)], "table": ["--train", str(cache),
                                                             "--test", str(cache)]}
    target = f"{path}/model" if command == "fit" and place != "under-file" else str(path)
    code, stdout, stderr = run_main([command, *required.get(command, []), option, target])
    assert code == 2, (stdout, stderr)
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith(
        f"cvxattn {command}: error: argument {option}:"), stderr
