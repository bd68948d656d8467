"""Figure saving: titled SVG only, written atomically, figure closed; the synthetic-data stamp."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from helpers.plots import style as plotting


def _titled_figure(title: str = "A title"):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    ax.set(title=title, xlabel="x", ylabel="y")
    return fig


def test_save_figure_writes_svg_and_closes(tmp_path):
    fig = _titled_figure()
    path = plotting.save_figure(fig, "demo_test", figures_dir=tmp_path)
    assert path == tmp_path / "demo_test.svg"
    text = path.read_text(encoding="utf-8")
    assert "<svg" in text and "A title" in text
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in tmp_path.iterdir()] == ["demo_test.svg"]


def test_svg_output_is_reproducible(tmp_path):
    plotting.apply_style()
    first = plotting.save_figure(_titled_figure(), "one", figures_dir=tmp_path).read_bytes()
    second = plotting.save_figure(_titled_figure(), "two", figures_dir=tmp_path).read_bytes()
    assert first == second


def test_suptitle_counts_as_title(tmp_path):
    fig, _ = plt.subplots()
    fig.suptitle("Overall")
    assert plotting.save_figure(fig, "sup", figures_dir=tmp_path).is_file()


def test_untitled_figure_is_refused(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    with pytest.raises(ValueError, match="no title"):
        plotting.save_figure(fig, "untitled", figures_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    plt.close(fig)


@pytest.mark.parametrize("name", ["../escape", "sub/dir", "", ".hidden"])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="plain file name"):
        plotting.save_figure(_titled_figure(), name, figures_dir=tmp_path)
    plt.close("all")


def test_failed_save_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = plotting.save_figure(_titled_figure("old"), "fig", figures_dir=tmp_path)
    before = target.read_bytes()
    fig = _titled_figure("new")

    def broken_savefig(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        plotting.save_figure(fig, "fig", figures_dir=tmp_path)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["fig.svg"]
    plt.close(fig)


def test_synthetic_note_is_in_the_svg(tmp_path):
    fig = plotting.synthetic_note(_titled_figure())
    text = plotting.save_figure(fig, "synthetic", figures_dir=tmp_path).read_text(encoding="utf-8")
    assert plotting.SYNTHETIC_TEXT in text


def test_default_folder_is_project_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(plotting.config, "FIGURES_DIR", tmp_path / "figures")
    assert plotting.save_figure(_titled_figure(), "x").parent == tmp_path / "figures"
