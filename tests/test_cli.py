"""The ``skinlesion`` command: argument parsing, literal values, exit codes, fast --help, subcommands."""

from __future__ import annotations

import argparse
import subprocess
import sys
import types
from pathlib import Path

import pytest

from helpers.apps import cli
from helpers.core import config
from helpers.runs import runner
from helpers.runs.params import parse_literal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", 3),
        ("0.5", 0.5),
        ("1e-3", 0.001),
        ("-2E4", -20000.0),
        ("[0.001, 0.01]", [0.001, 0.01]),
        ("[1e-4, 3E-3, 1.5e2]", [0.0001, 0.003, 150.0]),
        ("1e3x", "1e3x"),
        ("true", True),
        ("null", None),
        ("demo", "demo"),
        ("lesion_seed42", "lesion_seed42"),
        ("2024-01-01", "2024-01-01"),
        ("{a: 1}", {"a": 1}),
        ("[unclosed", "[unclosed"),
    ],
)
def test_parse_literal(text, expected):
    assert parse_literal(text) == expected


def test_run_passes_notebooks_config_and_literal_overrides(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(runner, "run_notebooks", lambda *a, **k: calls.append((a, k)) or Path("runs/x"))
    argv = ["run", "01", "02-train", "-p", "epochs", "3", "-p", "lrs", "[0.001, 0.01]", "-f", "c.yaml"]
    assert cli.main(argv) == 0
    (args, kwargs), *_ = calls
    assert args == (["01", "02-train"],)
    assert kwargs == {"config_file": Path("c.yaml"), "overrides": {"epochs": 3, "lrs": [0.001, 0.01]}}
    assert "runs/x" in capsys.readouterr().out


def test_run_defaults_to_all_notebooks_and_no_config(monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "run_notebooks", lambda *a, **k: calls.append((a, k)) or Path("r"))
    assert cli.main(["run"]) == 0
    assert calls == [(([],), {"config_file": None, "overrides": {}})]


def test_unknown_subcommand_exits_2(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["frobnicate"])
    assert caught.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_project_error_prints_message_without_traceback(monkeypatch, capsys):
    def failing(*args, **kwargs):
        raise runner.NotebookRunError("Notebook 01-eda failed in cell 3")

    monkeypatch.setattr(runner, "run_notebooks", failing)
    assert cli.main(["run", "01"]) == cli.ERROR_EXIT_CODE == 2
    err = capsys.readouterr().err
    assert err == "error: Notebook 01-eda failed in cell 3\n"


def test_unknown_parameter_is_a_clear_error(capsys):
    demo = str(config.CONFIGS_DIR / "demo.yaml")
    assert cli.main(["run", "01", "-p", "no_such_parameter", "1", "-f", demo]) == 2
    err = capsys.readouterr().err
    assert "no_such_parameter" in err and "01-eda:" in err and "Traceback" not in err


def test_help_is_fast_and_imports_nothing_heavy():
    code = (
        "import sys, helpers.apps.cli\n"
        "try:\n    helpers.apps.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('tensorflow', 'papermill', 'pandas') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "run" in result.stdout and "download" in result.stdout and "demo-data" in result.stdout
    assert result.stdout.strip().endswith("[]")


def test_every_subcommand_has_help(capsys):
    parser = cli.build_parser()
    for subcommand in cli.SUBCOMMANDS:
        assert subcommand.help
        with pytest.raises(SystemExit) as finished:
            parser.parse_args([subcommand.name, "--help"])
        assert finished.value.code == 0 and subcommand.help in capsys.readouterr().out


def test_download_passes_destination_and_server(monkeypatch, tmp_path, capsys):
    calls = []
    fake = types.ModuleType("helpers.data.download")
    fake.download_ham10000 = lambda dest, **options: calls.append((dest, options)) or dest
    monkeypatch.setitem(sys.modules, "helpers.data.download", fake)
    assert cli.main(["download", "--dest", str(tmp_path), "--server", "https://example.org"]) == 0
    assert cli.main(["download"]) == 0
    assert calls == [(tmp_path, {"server": "https://example.org"}), (config.DATA_DIR / "HAM10000", {})]
    assert str(tmp_path) in capsys.readouterr().out


@pytest.mark.slow
def test_demo_data_then_split(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(config, "SPLITS_DIR", tmp_path / "splits")
    demo = tmp_path / "demo"
    assert cli.main(["demo-data", "--dest", str(demo)]) == 0
    assert (demo / "HAM10000_metadata.csv").is_file()
    assert cli.main(["split", "--data-root", str(demo), "--seed", "7"]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "leaked_lesions" in out
    assert (tmp_path / "splits" / "demo_lesion_seed7.csv").is_file()


def test_split_on_missing_folder_exits_2(tmp_path, capsys):
    assert cli.main(["split", "--data-root", str(tmp_path / "nothing")]) == 2
    assert "HAM10000_metadata.csv" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "a.jpg", "--model", "m.h5", "--batch-size", "0"], "--batch-size: 0 is out of range"),
        (["predict", "a.jpg", "--model", "m.h5", "--batch-size", "-1"], "give a whole number of at least 1"),
        (["predict", "a.jpg", "--model", "m.h5", "--batch-size", "2.5"], "'2.5' is not a whole number"),
        (["split", "--seed", "-3"], "--seed: -3 is out of range: give a whole number from 0 to 4294967295"),
        (["split", "--val-fraction", "1.5"], "--val-fraction: 1.5 is out of range: give a fraction"),
        (["split", "--test-fraction", "nan"], "--test-fraction: nan is out of range"),
        (["split", "--test-fraction", "half"], "'half' is not a fraction from 0 to 0.99"),
        (["demo", "--port", "0"], "--port: 0 is out of range: give a port number from 1 to 65535"),
        (["demo", "--port", "70000"], "--port: 70000 is out of range"),
    ],
)
def test_numeric_options_are_checked_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 2 and message in capsys.readouterr().err


def test_every_numeric_option_has_a_checked_type():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.type not in (int, float), f"{name} {action.option_strings}: check its range"


def test_split_fractions_must_leave_training_images(monkeypatch, capsys):
    from helpers.data import source

    monkeypatch.setattr(source, "resolve_data_root", lambda *a: pytest.fail("checked before any work"))
    assert cli.main(["split", "--val-fraction", "0.5", "--test-fraction", "0.5"]) == 2
    assert "leave no training images" in capsys.readouterr().err


def test_parameter_of_the_wrong_type_is_caught_before_any_notebook_runs(monkeypatch, capsys):
    monkeypatch.setattr(runner, "_execute", lambda *a: pytest.fail("no notebook may start"))
    demo = str(config.CONFIGS_DIR / "demo.yaml")
    assert cli.main(["run", "02", "-p", "epochs", "notanumber", "-f", demo]) == 2
    err = capsys.readouterr().err
    assert "epochs = 'notanumber' (from -p) does not fit 02-train's default 20: give a whole number" in err
