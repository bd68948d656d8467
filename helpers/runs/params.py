"""Run configurations (``configs/*.yaml``) and the parameters each notebook receives from them.

A config holds a ``name``, ``parameters`` common to all notebooks and optional per-notebook sections under
``notebooks``; command-line overrides come last. ``extends: OTHER.yaml`` starts from another config (its
values, overridden key by key); ``members`` lists training variants (overrides of the ``02-train`` section)
that ``bench/accuracy.py`` trains and averages as one ensemble, and ``streams`` optionally groups them (by
number, from 1) into streams trained at the same time, each stream's members in turn. Each notebook only
receives the names its ``parameters`` cell declares, and a name that no notebook declares is an error (a typo
must not be silently ignored), as is a value whose type does not fit the declared default (caught before any
notebook starts).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from helpers.core import config
from helpers.core.errors import SkinLesionError

CONFIG_KEYS = frozenset({"name", "parameters", "notebooks", "extends", "members", "streams"})
REAL_DATA_CONFIG = "ham10000"
DEMO_CONFIG = "demo"
"""The configurations ``skinlesion run`` uses by default: for the real HAM10000, and without it."""
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_LITERAL_TYPES = (str, int, float, bool, type(None))


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-3`` as a float (as YAML 1.2 does), also inside lists."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> object:
    """Parse YAML text with scientific-notation numbers as floats (configs and ``-p`` values)."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


class ConfigError(SkinLesionError):
    """A run configuration or parameter override that cannot be used as given."""


@dataclass(frozen=True)
class RunConfig:
    """A parsed run configuration file."""

    name: str
    path: Path
    parameters: dict[str, object] = field(default_factory=dict)
    notebooks: dict[str, dict[str, object]] = field(default_factory=dict)
    members: list[dict[str, object]] = field(default_factory=list)
    """Training variants trained and averaged as one ensemble (``bench/accuracy.py``); empty: one model."""
    streams: list[list[int]] = field(default_factory=list)
    """Member numbers (from 1) per stream: two or more streams train at the same time, each in its own
    process, each stream's members in turn (faster on a machine whose second core one process barely uses);
    empty (or one stream): the members in turn in one process."""


def default_config_file() -> Path:
    """``configs/ham10000.yaml`` when the real HAM10000 is found, else ``configs/demo.yaml``."""
    name = REAL_DATA_CONFIG if config.ham10000_root() is not None else DEMO_CONFIG
    return config.CONFIGS_DIR / f"{name}.yaml"


def load_run_config(path: str | Path, _extended_by: tuple[Path, ...] = ()) -> RunConfig:
    """Read and validate a run configuration YAML file (name, parameters, notebooks sections; ``extends``
    another config; ``members`` of an ensemble)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"Config file not found: {path}\nFix: pass an existing file, e.g. -f configs/demo.yaml"
        )
    try:
        content = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"Config file {path} is not valid YAML: {error}") from error
    content = _require_mapping(content, f"{path}", path)
    unknown = sorted(set(content) - CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"Config file {path} has unknown key(s) {unknown}; allowed: {sorted(CONFIG_KEYS)}")
    name = content.get("name")
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"Config file {path} needs a 'name' made of letters, digits, '_' or '-' (got {name!r})"
        )
    base = _base_config(content.get("extends"), path, _extended_by)
    parameters = _literal_parameters(content.get("parameters") or {}, f"{path}: parameters", path)
    sections = _require_mapping(content.get("notebooks") or {}, f"{path}: notebooks", path)
    notebooks = {
        str(stem): _literal_parameters(values or {}, f"{path}: notebooks.{stem}", path)
        for stem, values in sections.items()
    }
    members = _members(content.get("members"), path)
    if base is not None:
        parameters = {**base.parameters, **parameters}
        notebooks = {
            stem: {**base.notebooks.get(stem, {}), **notebooks.get(stem, {})}
            for stem in {**base.notebooks, **notebooks}
        }
        members = members or base.members
    inherited = "streams" not in content and base is not None
    streams = base.streams if inherited else content.get("streams", [])
    _check_streams(streams, len(members), path, inherited)
    return RunConfig(
        name=name, path=path, parameters=parameters, notebooks=notebooks, members=members, streams=streams
    )


def _base_config(extends: object, path: Path, extended_by: tuple[Path, ...]) -> RunConfig | None:
    """The config that ``path`` extends (a file name relative to ``path``'s folder), or None."""
    if extends is None:
        return None
    if not isinstance(extends, str):
        raise ConfigError(f"{path}: 'extends' must name a config file, e.g. extends: recipe_cpu.yaml")
    base = (path.parent / extends).resolve()
    if base in (*extended_by, path.resolve()):
        raise ConfigError(f"{path}: 'extends: {extends}' makes a cycle of configs; remove one 'extends'")
    return load_run_config(base, (*extended_by, path.resolve()))


def _members(values: object, path: Path) -> list[dict[str, object]]:
    """The ensemble members: a list of (possibly empty) mappings of training overrides, at least two."""
    if values is None:
        return []
    if not isinstance(values, list) or len(values) < 2:
        raise ConfigError(
            f"{path}: 'members' must list at least two training variants (overrides of notebooks.02-train), "
            "e.g. [{}, {img_size: [225, 300]}]"
        )
    return [
        _literal_parameters(value or {}, f"{path}: members[{index}]", path)
        for index, value in enumerate(values)
    ]


def _check_streams(streams: object, n_members: int, path: Path, inherited: bool) -> None:
    """ConfigError unless ``streams`` is empty or lists every member number (1..n_members) exactly once."""
    if streams == []:
        return
    where = f"{path}: 'streams' (from the config it extends)" if inherited else f"{path}: 'streams'"
    if not n_members:
        raise ConfigError(f"{where} groups ensemble members, and the config lists no 'members'")
    numbers = list(range(1, n_members + 1))
    valid = isinstance(streams, list) and all(
        isinstance(stream, list) and stream and all(type(n) is int for n in stream) for stream in streams
    )
    if not valid or sorted(n for stream in streams for n in stream) != numbers:
        raise ConfigError(
            f"{where} must list each of the {n_members} member numbers {numbers} exactly once, grouped in "
            f"lists (got {streams!r}); e.g. streams: [[1, 2], [3]] trains member 3 beside 1 then 2"
        )


def parse_literal(text: str) -> object:
    """A command-line value as a YAML literal: ``3`` int, ``1e-3`` float, ``[1, 2]`` list, else str."""
    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        return text
    if not _is_literal(value):
        return text
    return value


def declared_parameters(notebook: Path) -> dict[str, object]:
    """Names and defaults (as source text, e.g. ``'"auto"'``) declared in a notebook's ``parameters`` cell
    (empty if it has none)."""
    import papermill  # imported here: papermill pulls in nbclient/jupyter, slow for `skinlesion --help`

    try:
        declared = papermill.inspect_notebook(str(notebook))
    except Exception as error:  # invalid JSON, no kernel language, ...: name the file instead of a deep trace
        raise ConfigError(
            f"Cannot read the parameters of notebook {notebook}: {type(error).__name__}: {error}\n"
            "Fix: open and save it in Jupyter (valid nbformat 4 with a Python kernelspec)"
        ) from error
    return {name: info["default"] for name, info in declared.items()}


def plan_parameters(
    run_config: RunConfig,
    declared: Mapping[str, Mapping[str, object]],
    overrides: Mapping[str, object],
    selected: Sequence[str],
) -> dict[str, dict[str, object]]:
    """Parameters per selected notebook stem: config name, common parameters, its section, then overrides.

    ``declared`` maps every known notebook stem to its declared parameters and their defaults as source text
    (as :func:`declared_parameters` gives them); names that none of them declare (or, for overrides, none of
    the selected notebooks) and values that do not fit the type of a selected notebook's default raise
    :class:`ConfigError`.
    """
    _check_config_names(run_config, declared)
    _check_override_names(overrides, {stem: declared[stem] for stem in selected})
    plan = {}
    for stem in selected:
        merged = {
            "config_name": run_config.name,
            **run_config.parameters,
            **run_config.notebooks.get(stem, {}),
        }
        merged.update(overrides)
        plan[stem] = {name: value for name, value in merged.items() if name in declared[stem]}
    _check_types(plan, declared, overrides, run_config.path)
    return plan


def _check_types(
    plan: Mapping[str, Mapping[str, object]],
    declared: Mapping[str, Mapping[str, object]],
    overrides: Mapping[str, object],
    config_path: Path,
) -> None:
    """Raise ConfigError listing every planned value whose type does not fit the notebook's default (once
    per name, for the first notebook it does not fit)."""
    problems: dict[str, str] = {}
    for stem, values in plan.items():
        for name, value in values.items():
            default = _literal(declared[stem][name])
            if not _fits(value, default):
                problems.setdefault(
                    name,
                    f"{name} = {value!r} (from {'-p' if name in overrides else config_path}) does not fit "
                    f"{stem}'s default {declared[stem][name]}: give {_expected(default)}",
                )
    if problems:
        raise ConfigError(
            "Parameter value(s) of the wrong type:\n  " + "\n  ".join(problems.values()) + "\n"
            "Fix: -p values are YAML literals (20, 0.5, true, null, [150, 200]); quote text that looks like "
            "a number: -p NAME \"'123'\"."
        )


def _literal(source: object) -> object:
    """The value of a default's source text; None (which any value fits) when it is no plain literal."""
    try:
        return ast.literal_eval(str(source))
    except (ValueError, SyntaxError):
        return None


def _fits(value: object, default: object) -> bool:
    """Whether ``value`` may replace ``default``: a None default takes anything, text also takes None, a
    float takes an int; otherwise the type must be the same (a bool is no number)."""
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    if isinstance(default, str):
        return value is None or isinstance(value, str)
    return isinstance(value, type(default))


def _expected(default: object) -> str:
    """What a value fitting ``default`` looks like, for the error message."""
    kinds = {bool: "true or false", int: "a whole number", float: "a number", str: "text (or null)"}
    return kinds.get(type(default), f"a {type(default).__name__}")


def _check_config_names(run_config: RunConfig, declared: Mapping[str, Mapping[str, object]]) -> None:
    known = set().union(*declared.values()) if declared else set()
    unknown = sorted(set(run_config.parameters) - known)
    if unknown:
        raise ConfigError(
            f"{run_config.path}: parameters {unknown} are declared by no notebook (typo?). "
            f"Declared: {sorted(known)}"
        )
    for stem, values in run_config.notebooks.items():
        if stem not in declared:
            raise ConfigError(
                f"{run_config.path}: section notebooks.{stem} names no notebook; have {sorted(declared)}"
            )
        extra = sorted(set(values) - set(declared[stem]))
        if extra:
            raise ConfigError(
                f"{run_config.path}: notebooks.{stem} sets {extra}, which {stem} does not declare. "
                f"It declares: {sorted(declared[stem])}"
            )


def _check_override_names(
    overrides: Mapping[str, object], declared: Mapping[str, Mapping[str, object]]
) -> None:
    known = set().union(*declared.values()) if declared else set()
    unknown = sorted(set(overrides) - known)
    if unknown:
        listing = "; ".join(
            f"{stem}: {', '.join(sorted(names)) or '(none)'}" for stem, names in declared.items()
        )
        raise ConfigError(
            f"Unknown parameter(s) {unknown}: no selected notebook declares them. Declared: {listing}"
        )


def _require_mapping(value: object, where: str, path: Path) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where} must be a mapping of names to values (got {type(value).__name__}); file {path}"
        )
    return value


def _literal_parameters(values: object, where: str, path: Path) -> dict[str, object]:
    values = _require_mapping(values, where, path)
    for name, value in values.items():
        if not (isinstance(name, str) and name.isidentifier()) or not _is_literal(value):
            raise ConfigError(
                f"{where}: {name!r}: {value!r} is not a Python identifier mapped to a plain literal "
                "(string, number, bool, null, or lists/mappings of them)"
            )
    return dict(values)


def _is_literal(value: object) -> bool:
    if isinstance(value, list):
        return all(_is_literal(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_literal(v) for k, v in value.items())
    return isinstance(value, _LITERAL_TYPES)
