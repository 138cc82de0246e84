"""The npe2 manifest is valid, napari finds our contributions, and the wheel ships them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import npe2
import pytest

PLUGIN = "napari-dlbio"
REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_YAML = REPO_ROOT / "src" / "napari_dlbio" / "napari.yaml"


@pytest.fixture(scope="module")
def plugin_manager() -> npe2.PluginManager:
    pm = npe2.PluginManager.instance()
    pm.discover()
    return pm


def test_npe2_validate_passes() -> None:
    npe2_cli = Path(sys.executable).with_name("npe2")
    result = subprocess.run(
        [str(npe2_cli), "validate", "napari_dlbio"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_root_manifest_is_the_packaged_one() -> None:
    root_yaml = REPO_ROOT / "napari.yaml"
    assert root_yaml.is_symlink()
    assert root_yaml.resolve() == PACKAGE_YAML.resolve()


def test_napari_finds_readers_for_stacks_and_folders(
    plugin_manager: npe2.PluginManager, tmp_path: Path
) -> None:
    from napari.plugins._npe2 import get_readers

    assert PLUGIN in get_readers(str(tmp_path / "stack.tif"))
    assert PLUGIN in get_readers(str(tmp_path / "STACK.TIFF"))
    assert PLUGIN in get_readers(str(tmp_path))
    assert PLUGIN not in get_readers(str(tmp_path / "photo.png"))
    assert PLUGIN not in get_readers(str(tmp_path / "photo.jpg"))


def test_napari_finds_the_labels_writers(plugin_manager: npe2.PluginManager) -> None:
    tiff, _ = plugin_manager.get_writer("mask.tif", ["labels"], plugin_name=PLUGIN)
    pngs, _ = plugin_manager.get_writer("mask.png", ["labels"], plugin_name=PLUGIN)
    image, _ = plugin_manager.get_writer("image.tif", ["image"], plugin_name=PLUGIN)

    assert tiff is not None
    assert tiff.command == "napari-dlbio.write_labels_tiff"
    assert pngs is not None
    assert pngs.command == "napari-dlbio.write_labels_pngs"
    assert image is None


def test_napari_lists_the_samples(plugin_manager: npe2.PluginManager) -> None:
    samples = dict(plugin_manager.iter_sample_data())[PLUGIN]
    assert {sample.key for sample in samples} == {"isbi2012", "plantvillage"}


def test_wheel_ships_manifest_and_sample_data(tmp_path: Path) -> None:
    pytest.importorskip("hatchling", reason="building the wheel needs hatchling")
    build = ["pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", *build, str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("napari_dlbio-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        packaged_yaml = archive.read("napari_dlbio/napari.yaml")
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_text = archive.read(entry_points).decode()

    assert packaged_yaml == PACKAGE_YAML.read_bytes()
    assert "napari-dlbio = napari_dlbio:napari.yaml" in entry_text
    sample = "napari_dlbio/sample_data/"
    assert sample + "README.md" in names
    assert sample + "isbi2012_train-volume_slices0-4.tif" in names
    assert sample + "isbi2012_train-labels_slices0-4.tif" in names
    leaves = [n for n in names if n.startswith(sample + "plantvillage/") and n.endswith(".JPG")]
    assert len(leaves) == 45
    package_bytes = sum(archive.getinfo(n).file_size for n in names if n.startswith(sample))
    assert package_bytes < 5 * 2**20


def test_napari_lists_the_widgets_in_its_menus(plugin_manager: npe2.PluginManager) -> None:
    manifest = plugin_manager.get_manifest(PLUGIN)
    widgets = {widget.display_name for widget in manifest.contributions.widgets}
    assert widgets == {
        "Data & annotation",
        "Train",
        "Predict & inspect",
        "Correct & fine-tune",
        "Export",
    }
    placed = {
        menu_id: {item.command for item in items}
        for menu_id, items in manifest.contributions.menus.items()
    }
    assert "napari-dlbio.data_widget" in placed["napari/layers/annotate"]
    segment = {"napari-dlbio.train_widget", "napari-dlbio.predict_widget"}
    assert segment | {"napari-dlbio.refine_widget"} <= placed["napari/layers/segment"]
    assert "napari-dlbio.export_widget" in placed["napari/file/io_utilities"]
