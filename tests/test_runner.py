"""The papermill runner and run configs: selection, parameter merging and filtering, outputs, failures."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from helpers.core import config
from helpers.runs import params as notebook_params
from helpers.runs import runner
from helpers.runs.params import ConfigError, RunConfig, load_run_config, plan_parameters
from helpers.runs.runner import NotebookRunError, run_notebooks, select_notebooks

RECORD_CELL = (
    "import json, os, sys\n"
    "values = {k: v for k, v in globals().items() if k in ('config_name', 'a', 'b', 'c')}\n"
    "values.update(executable=sys.executable, cwd=os.getcwd())\n"
    "open('NAME.json', 'w').write(json.dumps(values))"
)


def _write_notebook(path: Path, parameters: str, *body: str) -> Path:
    cells = [new_code_cell(parameters, metadata={"tags": ["parameters"]}), *map(new_code_cell, body)]
    nb = new_notebook(
        cells=cells,
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    nbformat.write(nb, path)
    return path


def _write_config(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content), encoding="utf-8")
    return path


@pytest.fixture()
def notebooks(tmp_path) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _write_notebook(
        folder / "01-first.ipynb",
        "config_name = 'x'\na = 1\nb = ['text']",
        RECORD_CELL.replace("NAME", "first"),
    )
    _write_notebook(folder / "02-second.ipynb", "a = 1\nc = 0", RECORD_CELL.replace("NAME", "second"))
    _write_notebook(folder / "03-fail.ipynb", "a = 1", "x = 1", "y = 2\nraise ValueError('boom')")
    (folder / "scratch.ipynb").write_text("{}", encoding="utf-8")  # not numbered: never selected
    return folder


def test_select_notebooks_by_number_stem_or_path(notebooks):
    first = notebooks / "01-first.ipynb"
    assert select_notebooks(None, notebooks) == sorted(notebooks.glob("0*.ipynb"))
    assert select_notebooks(["02", "01-first"], notebooks) == [first, notebooks / "02-second.ipynb"]
    assert select_notebooks([str(first), "01"], notebooks) == [first]


@pytest.mark.parametrize(
    ("name", "message"), [("04", "matches no notebook"), ("0", "matches no"), ("x.ipynb", "not found")]
)
def test_select_notebooks_rejects_unknown_names(notebooks, name, message):
    with pytest.raises(NotebookRunError, match=message):
        select_notebooks([name], notebooks)


def test_run_merges_filters_and_keeps_sources_clean(notebooks, tmp_path):
    sources = {p: p.read_bytes() for p in notebooks.glob("*.ipynb")}
    config_file = _write_config(
        tmp_path / "cfg.yaml",
        {"name": "unit", "parameters": {"a": 5, "c": 1}, "notebooks": {"02-second": {"c": 3}}},
    )
    run_dir = run_notebooks(
        ["01", "02"],
        config_file=config_file,
        overrides={"b": [1, 2]},
        runs_dir=tmp_path / "runs",
        notebooks_dir=notebooks,
    )
    assert run_dir.parent == tmp_path / "runs" and run_dir.name.endswith("Z-unit")
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "01-first.ipynb",
        "02-second.ipynb",
        "parameters.yaml",
    ]
    first = json.loads((notebooks / "first.json").read_text())
    second = json.loads((notebooks / "second.json").read_text())
    assert first == {
        "config_name": "unit",
        "a": 5,
        "b": [1, 2],
        "executable": sys.executable,
        "cwd": str(notebooks),
    }
    assert {k: second[k] for k in ("a", "c")} == {"a": 5, "c": 3} and "b" not in second
    assert {p: p.read_bytes() for p in notebooks.glob("*.ipynb")} == sources
    record = yaml.safe_load((run_dir / "parameters.yaml").read_text())
    assert record["notebooks"]["02-second"] == {"a": 5, "c": 3}


def test_failure_names_notebook_cell_and_executed_copy(notebooks, tmp_path):
    config_file = _write_config(tmp_path / "cfg.yaml", {"name": "unit"})
    with pytest.raises(NotebookRunError) as caught:
        run_notebooks(
            ["03"], config_file=config_file, overrides={}, runs_dir=tmp_path / "runs", notebooks_dir=notebooks
        )
    message = str(caught.value)
    (copy,) = (tmp_path / "runs").glob("*/03-fail.ipynb")
    assert "Notebook 03-fail failed in cell 2 " in message
    assert "y = 2" in message and "ValueError: boom" in message
    assert str(copy) in message
    assert "boom" in copy.read_text(encoding="utf-8")


def test_unknown_override_is_rejected_before_running(notebooks, tmp_path):
    config_file = _write_config(tmp_path / "cfg.yaml", {"name": "unit"})
    with pytest.raises(ConfigError, match=r"Unknown parameter\(s\) \['c'\].*01-first: a, b, config_name"):
        run_notebooks(
            ["01"],
            config_file=config_file,
            overrides={"c": 1},
            runs_dir=tmp_path / "runs",
            notebooks_dir=notebooks,
        )
    assert not (tmp_path / "runs").exists()


def test_a_config_with_ensemble_members_is_refused_before_running(notebooks, tmp_path):
    """The notebooks train one model: run with an ensemble config they would pass for the ensemble's run."""
    config_file = _write_config(tmp_path / "cfg.yaml", {"name": "unit", "members": [{}, {"seed": 7}]})
    with pytest.raises(ConfigError, match=r"lists ensemble members.*\nFix: uv run python bench/accuracy.py"):
        run_notebooks(
            ["01"], config_file=config_file, overrides={}, runs_dir=tmp_path / "runs", notebooks_dir=notebooks
        )
    assert not (tmp_path / "runs").exists()


def _declared() -> dict[str, dict[str, object]]:
    return {"01-a": {"config_name": "", "x": 1}, "02-b": {"x": 1, "y": 2}}


def test_plan_merges_in_order_and_filters_per_notebook(tmp_path):
    run_config = RunConfig("cfg", tmp_path / "c.yaml", {"x": 10, "y": 20}, {"02-b": {"y": 30}})
    plan = plan_parameters(run_config, _declared(), {"x": 99}, ["01-a", "02-b"])
    assert plan == {"01-a": {"config_name": "cfg", "x": 99}, "02-b": {"x": 99, "y": 30}}


@pytest.mark.parametrize(
    ("parameters", "sections", "message"),
    [
        ({"typo": 1}, {}, "declared by no notebook"),
        ({}, {"09-missing": {"x": 1}}, "names no notebook"),
        ({}, {"01-a": {"y": 1}}, "01-a does not declare"),
    ],
)
def test_plan_rejects_config_names_no_notebook_declares(tmp_path, parameters, sections, message):
    run_config = RunConfig("cfg", tmp_path / "c.yaml", parameters, sections)
    with pytest.raises(ConfigError, match=message):
        plan_parameters(run_config, _declared(), {}, ["01-a"])


def test_override_must_be_declared_by_a_selected_notebook(tmp_path):
    with pytest.raises(ConfigError, match="'y'"):
        plan_parameters(RunConfig("cfg", tmp_path / "c.yaml"), _declared(), {"y": 1}, ["01-a"])


def test_load_run_config_reads_sections(tmp_path):
    path = _write_config(
        tmp_path / "c.yaml", {"name": "n", "parameters": {"a": [1, 2]}, "notebooks": {"01-x": {"b": None}}}
    )
    assert load_run_config(path) == RunConfig("n", path, {"a": [1, 2]}, {"01-x": {"b": None}})


def test_a_config_extends_another_key_by_key_and_lists_ensemble_members(tmp_path):
    base = _write_config(
        tmp_path / "base.yaml",
        {"name": "base", "parameters": {"a": 1, "b": 2}, "notebooks": {"02-t": {"lr": 0.1, "seed": 1}}},
    )
    child = _write_config(
        tmp_path / "child.yaml",
        {
            "name": "child",
            "extends": base.name,  # relative to the child's folder
            "parameters": {"b": 3},
            "notebooks": {"02-t": {"seed": 7}, "04-e": {"tta": True}},
            "members": [{}, {"img_size": [225, 300]}],
        },
    )
    loaded = load_run_config(child)
    assert loaded.name == "child" and loaded.parameters == {"a": 1, "b": 3}
    assert loaded.notebooks == {"02-t": {"lr": 0.1, "seed": 7}, "04-e": {"tta": True}}
    assert loaded.members == [{}, {"img_size": [225, 300]}]
    assert load_run_config(base).members == []  # a config without members trains one model
    assert loaded.streams == [] and load_run_config(base).streams == []  # members in turn, in one process
    grandchild = _write_config(
        tmp_path / "grandchild.yaml", {"name": "g", "extends": child.name, "streams": [[2], [1]]}
    )
    assert load_run_config(grandchild).streams == [[2], [1]]  # grouped by member number
    heir = _write_config(tmp_path / "heir.yaml", {"name": "h", "extends": grandchild.name})
    assert load_run_config(heir).streams == [[2], [1]] and load_run_config(heir).members == loaded.members
    fewer = _write_config(
        tmp_path / "fewer.yaml", {"name": "f", "extends": heir.name, "members": [{}, {}, {}]}
    )
    with pytest.raises(ConfigError, match=r"fewer.yaml: 'streams' \(from the config it extends\) must list"):
        load_run_config(fewer)  # its members outnumber the streams it inherits


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"extends": "c.yaml"}, "cycle"),
        ({"extends": 3}, "must name a config file"),
        ({"extends": "missing.yaml"}, "not found"),
        ({"members": [{}]}, "at least two"),
        ({"members": {"a": 1}}, "at least two"),
        ({"members": [{}, {"when": None, "not-identifier": 1}]}, r"members\[1\]"),
        ({"streams": [[1], [2]]}, r"'streams' groups ensemble members, and the config lists no 'members'"),
        ({"members": [{}, {}], "streams": [[1], [1]]}, r"\[1, 2\] exactly once"),
        (
            {"members": [{}, {}], "streams": [[1], [2], [3]]},
            r"exactly once.*e\.g\. streams: \[\[1, 2\], \[3\]\]",
        ),
        ({"members": [{}, {}], "streams": [[1, 2], []]}, "exactly once"),
        ({"members": [{}, {}], "streams": [1, 2]}, "grouped in lists"),
        ({"members": [{}, {}], "streams": [[1], [True]]}, "exactly once"),
    ],
)
def test_bad_extends_or_members_are_clear_errors(tmp_path, content, message):
    path = _write_config(tmp_path / "c.yaml", {"name": "n", **content})
    with pytest.raises(ConfigError, match=message):
        load_run_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [unclosed", "not valid YAML"),
        ("- a list", "must be a mapping"),
        ("parameters: {}", "needs a 'name'"),
        ("name: has space", "needs a 'name'"),
        ("name: n\nextra: 1", "unknown key"),
        ("name: n\nparameters: {when: 2024-01-01}", "plain literal"),
        ("name: n\nparameters: {not-identifier: 1}", "plain literal"),
    ],
)
def test_load_run_config_rejects_bad_files(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_run_config(path)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_run_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("real_root", "expected"), [(Path("/somewhere"), "ham10000.yaml"), (None, "demo.yaml")]
)
def test_default_config_depends_on_real_data(monkeypatch, real_root, expected):
    monkeypatch.setattr(notebook_params.config, "ham10000_root", lambda: real_root)
    assert notebook_params.default_config_file() == config.CONFIGS_DIR / expected


@pytest.mark.parametrize("name", ["demo.yaml", "ham10000.yaml"])
def test_project_configs_fit_the_project_notebooks(name):
    run_config = load_run_config(config.CONFIGS_DIR / name)
    assert run_config.name == name.removesuffix(".yaml")
    declared = {p.stem: notebook_params.declared_parameters(p) for p in runner.numbered_notebooks()}
    plan = plan_parameters(run_config, declared, {}, list(declared))
    assert plan["01-eda"]["config_name"] == run_config.name


def test_override_of_the_wrong_type_is_rejected_before_running(notebooks, tmp_path):
    config_file = _write_config(tmp_path / "cfg.yaml", {"name": "unit"})
    with pytest.raises(
        ConfigError,
        match=r"a = 'notanumber' \(from -p\) does not fit 01-first's default 1: give a whole number",
    ):
        run_notebooks(
            ["01", "02"],
            config_file=config_file,
            overrides={"a": "notanumber"},
            runs_dir=tmp_path / "runs",
            notebooks_dir=notebooks,
        )
    assert not (tmp_path / "runs").exists()


_TYPED = {
    "01-a": {
        "n": "20",
        "f": "0.5",
        "t": '"auto"',
        "b": "False",
        "o": "None",
        "l": "[150, 200]",
        "e": "os.sep",
    }
}


@pytest.mark.parametrize(
    ("name", "value", "fits"),
    [
        ("n", 3, True),
        ("n", "notanumber", False),
        ("n", 2.5, False),
        ("n", True, False),
        ("f", 1, True),
        ("f", 1e-3, True),
        ("f", "fast", False),
        ("t", "demo", True),
        ("t", None, True),
        ("t", 123, False),
        ("b", True, True),
        ("b", 1, False),
        ("o", [1, "x"], True),
        ("l", [224, 224], True),
        ("l", 224, False),
        ("e", 5, True),
    ],
)
def test_values_must_fit_the_type_of_the_declared_default(tmp_path, name, value, fits):
    config_path = tmp_path / "c.yaml"
    from_config = RunConfig("cfg", config_path, {name: value})
    for run_config, overrides, source in (
        (from_config, {}, str(config_path)),
        (RunConfig("cfg", config_path), {name: value}, "-p"),
    ):
        if fits:
            assert plan_parameters(run_config, _TYPED, overrides, ["01-a"])["01-a"][name] == value
        else:
            with pytest.raises(
                ConfigError, match=rf"{name} = .* \(from {re.escape(source)}\) does not fit 01-a"
            ):
                plan_parameters(run_config, _TYPED, overrides, ["01-a"])
