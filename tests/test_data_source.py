"""Data-root resolution: real data when found, a loud fallback to demo data, clear errors for bad paths."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from helpers.core import config
from helpers.core.errors import DataError
from helpers.data.demo import METADATA_FILE, is_demo_dataset
from helpers.data.source import NO_DATA_BANNER, DataSource, resolve_data_root


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo folder for the whole module, so the dataset is generated once and then reused."""
    return tmp_path_factory.mktemp("data") / "demo"


@pytest.fixture
def no_real_data(tmp_path: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide every place real data could come from and send demo data to ``demo_dir``."""
    monkeypatch.delenv("SKINLESION_DATA", raising=False)
    monkeypatch.delenv("SKINLESION_SHARED", raising=False)
    monkeypatch.setattr(config, "DATA_DIR", tmp_path / "data")
    monkeypatch.setattr(config, "DEMO_DIR", demo_dir)


def _fake_real_dataset(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / METADATA_FILE).write_text("lesion_id,image_id,dx,dx_type,age,sex,localization\n")
    return root


def test_auto_uses_real_data_from_skinlesion_data(
    no_real_data: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    real = _fake_real_dataset(tmp_path / "elsewhere" / "HAM10000")
    monkeypatch.setenv("SKINLESION_DATA", str(real))
    source = resolve_data_root("auto")
    assert source == DataSource(root=real.resolve(), is_demo=False, description=source.description)
    assert str(real.resolve()) in source.description
    assert "SYNTHETIC" not in capsys.readouterr().out


def test_auto_uses_data_dir_copy(no_real_data: None, tmp_path: Path) -> None:
    real = _fake_real_dataset(tmp_path / "data" / "HAM10000")
    assert resolve_data_root().root == real.resolve()


def test_auto_falls_back_to_demo_data_loudly(
    no_real_data: None, demo_dir: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="helpers.data.source"):
        source = resolve_data_root("auto")
    assert source.is_demo and source.root == demo_dir and is_demo_dataset(demo_dir)
    assert "SYNTHETIC" in source.description
    assert NO_DATA_BANNER in capsys.readouterr().out
    assert (
        "NO REAL DATA FOUND - USING SYNTHETIC DEMO DATA - results are meaningless for medicine" in caplog.text
    )
    assert "skinlesion download" in caplog.text


def test_demo_spec_uses_demo_data_even_when_real_data_exists(
    no_real_data: None,
    tmp_path: Path,
    demo_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setenv("SKINLESION_DATA", str(_fake_real_dataset(tmp_path / "HAM10000")))
    source = resolve_data_root("demo")
    assert source.is_demo and source.root == demo_dir
    assert "USING SYNTHETIC DEMO DATA" in capsys.readouterr().out


def test_explicit_path_to_a_dataset(tmp_path: Path) -> None:
    real = _fake_real_dataset(tmp_path / "my data")
    source = resolve_data_root(str(real))
    assert source.root == real.resolve() and not source.is_demo
    assert resolve_data_root(real) == source


def test_explicit_path_to_demo_data_is_flagged(no_real_data: None, demo_dir: Path) -> None:
    resolve_data_root("demo")
    assert resolve_data_root(demo_dir).is_demo


def test_explicit_path_without_metadata_names_path_and_fix(tmp_path: Path) -> None:
    empty = tmp_path / "nothing here"
    empty.mkdir()
    with pytest.raises(DataError) as error:
        resolve_data_root(empty)
    message = str(error.value)
    assert str(empty) in message and METADATA_FILE in message
    assert "skinlesion download" in message and "SKINLESION_DATA" in message
    with pytest.raises(DataError, match="No HAM10000_metadata.csv"):
        resolve_data_root(tmp_path / "missing")


@pytest.mark.real_data
def test_auto_finds_the_shared_real_copy(
    ham_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SKINLESION_DATA", raising=False)
    monkeypatch.setattr(config, "DATA_DIR", tmp_path / "data")
    source = resolve_data_root()
    assert source.root == ham_root.resolve() and not source.is_demo
