"""`vitreg scan`: planted truth is found by the scan, a clean model is "no artifacts found",
the card is written, and bad input exits non-zero with a clear message."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import small_vit
from vitreg import planting
from vitreg.cli.main import main
from vitreg.core.models import get_spec
from vitreg.measure.scan import scan
from vitreg.present.scan_render import write_card
from vitreg.core.weights import LoadedModel


def _loaded(name: str, *, depth: int, size: int, **kw) -> LoadedModel:
    model = small_vit(name, depth=depth, image_size=size, **kw)
    return LoadedModel(model=model, spec=get_spec(name), image_size=(size, size), pretrained=False,
                       source="random init (no pretrained weights)")


def _images(n: int = 10, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def dino() -> LoadedModel:
    torch.manual_seed(0)
    return _loaded("dino_s16", depth=6, size=128)


def test_planted_outliers_are_found_at_their_block_and_share(dino):
    images = _images(12, 128)
    mask = planting.random_outlier_mask(len(images), dino.layout.grid, fraction=0.05, seed=3)
    with planting.planted(dino, mask, block=3, norm=1000.0):
        report = scan(dino, images, progress=False, batch_size=5)
    assert report.emergence == 4                      # planted at the output of block 3 (0-based) -> block 4
    assert report.share.fraction == pytest.approx(float(mask.float().mean()), abs=1e-9)
    assert report.high_norms.bimodal and report.threshold is not None
    assert report.fractions[:3].eq(0).all() and report.fractions[3:].gt(0).all()
    assert report.verdict.startswith(f"high-norm tokens in {100 * float(mask.float().mean()):.1f}% of patches "
                                     "from block 4 of 6")
    assert report.verdict.endswith("[random weights]")
    assert report.rule.startswith("scale-free")


def test_a_clean_random_model_has_no_artifacts(dino):
    report = scan(dino, _images(12, 128), progress=False)
    assert report.verdict == "no artifacts found [random weights]"
    assert report.share.fraction == 0 and report.emergence is None and not report.high_norms.bimodal
    assert abs(report.attention["score_median"]) < 0.1 and not report.massive["found"]
    assert report.registers is None


def test_published_cut_off_is_used_where_the_zoo_has_one():
    loaded = _loaded("dinov2_s", depth=4, size=112)
    images = _images(8, 112)
    mask = planting.random_outlier_mask(len(images), loaded.layout.grid, fraction=0.04, seed=1)
    with planting.planted(loaded, mask, block=1, norm=1000.0):
        report = scan(loaded, images, progress=False)
    assert report.threshold == 150.0 and report.rule.startswith("published cut-off")
    assert report.share.fraction == pytest.approx(float(mask.float().mean()), abs=1e-9)
    assert report.emergence == 2


def test_an_eva_model_with_registers_is_scanned_through_the_same_path():
    """DINOv3 (timm Eva, RoPE, 1 class + 4 registers): planted outliers are found at their block and share."""
    loaded = _loaded("dinov3_s", depth=4, size=128)
    assert (loaded.layout.num_cls, loaded.layout.num_reg) == (1, 4)
    images = _images(8, 128)
    mask = planting.random_outlier_mask(len(images), loaded.layout.grid, fraction=0.05, seed=2)
    with planting.planted(loaded, mask, block=1, norm=1000.0):
        report = scan(loaded, images, progress=False)
    assert report.emergence == 2 and report.rule.startswith("scale-free")
    assert report.share.fraction == pytest.approx(float(mask.float().mean()), abs=1e-9)


def test_registers_that_take_the_high_norms_are_said_to_absorb_them():
    loaded = _loaded("dinov2_s_reg", depth=4, size=112)
    images = _images(6, 112)
    with planting.planted_registers(loaded, len(images)):
        report = scan(loaded, images, progress=False)
    assert report.share.fraction == 0
    assert report.registers["count"] == 4 and report.registers["norm_ratio"] > 5
    assert report.verdict.startswith("no high-norm patch tokens; registers absorb them")


def test_without_a_class_token_the_attention_is_mean_pooled():
    loaded = _loaded("dino_s16", depth=2, size=64, class_token=False, global_pool="avg")
    report = scan(loaded, _images(4, 64), progress=False)
    assert loaded.layout.num_cls == 0
    assert report.attention["query"].startswith("mean over patch queries")
    assert report.maps.shape == (4, 4, 4)


def test_the_card_is_written_and_says_random_weights(dino, tmp_path):
    report = scan(dino, _images(4, 128), progress=False, n_maps=3)
    paths = write_card(report, tmp_path)
    assert sorted(p.name for p in paths.values()) == ["scan_dino_s16.html", "scan_dino_s16.json", "scan_dino_s16.png"]
    card = json.loads(paths["json"].read_text())
    assert card["random_weights"] is True and card["verdict"] == report.verdict
    assert card["outliers"]["n_blocks"] == 6 and len(card["blocks"]["norm_quantiles"]) == 6
    assert "random weights" in paths["html"].read_text()
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*"))            # no temporary file left behind


# --- the command ------------------------------------------------------------------------------------
def test_scan_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["scan", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("MODEL", "--weights", "--images", "--size", "--out", "--json", "--random", "--batch-size",
                   "--device", "Exit status"):
        assert option in out


@pytest.mark.parametrize("argv, message", [
    (["no_such_model_xyz", "--random"], "unknown model"),
    (["resnet18", "--random"], "not a plain ViT"),
    (["dino_s16", "--weights", "/nonexistent/dino.safetensors"], "does not exist"),
    (["dino_s16", "--weights", "/tmp/x.pth", "--random"], "not both"),
])
def test_bad_input_exits_2_with_the_message(argv, message, capsys, tmp_path):
    assert main(["scan", *argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_an_empty_image_folder_or_missing_weights_offline_exit_2(capsys, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["scan", "dino_s16", "--random", "--images", str(empty)]) == 2
    assert "no images" in capsys.readouterr().err
    monkeypatch.setattr("vitreg.core.weights.find_weights", lambda spec, weights=None: (None, ["(nowhere)"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["scan", "dino_s16", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "No pretrained weights for dino_s16" in err and "--weights FILE" in err
    assert not (tmp_path / "out").exists()


def test_scan_command_writes_the_card_and_prints_json(capsys, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, arr in enumerate(_images(3, 48)):
        Image.fromarray(arr).save(folder / f"{i}.png")
    out = tmp_path / "out"
    assert main(["scan", "vit_tiny_patch16_224", "--random", "--size", "64", "--images", str(folder),
                 "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    card = json.loads(captured.out)
    assert card["random_weights"] is True and card["n_images"] == 3 and "[random weights]" in card["verdict"]
    assert (out / "scan_vit_tiny_patch16_224.html").is_file() and (out / "scan_vit_tiny_patch16_224.png").is_file()
    assert card["verdict"] in captured.err


def test_the_zoo_table_has_one_row_per_model_with_planted_outliers_found_in_their_row_only(dino):
    """scan_table on two scans of the same model, one with outliers planted at block 3: only that row has
    them, with their share and emergence block; the layout comes from the model."""
    from vitreg.measure.scan import TABLE_COLUMNS, scan_table, table_text

    images = _images(12, 128)
    mask = planting.random_outlier_mask(len(images), dino.layout.grid, fraction=0.05, seed=3)
    clean = scan(dino, images, progress=False)
    with planting.planted(dino, mask, block=3, norm=1000.0):
        planted = scan(dino, images, progress=False)
    rows = scan_table([clean, planted])
    assert [list(r) for r in rows] == [list(TABLE_COLUMNS)] * 2
    assert rows[0]["emergence block"] == "none" and rows[0]["outlier share"].startswith("0.00% ")
    assert rows[1]["emergence block"] == "4 of 6"
    assert rows[1]["outlier share"].startswith(f"{100 * float(mask.float().mean()):.2f}% [")
    assert rows[0]["layout"] == rows[1]["layout"] == "1 + 0 + 8x8"
    assert all(r["model"].endswith("[random weights]") and r["verdict"].endswith("[random weights]") for r in rows)
    assert rows[0]["verdict"] == "no artifacts found [random weights]"
    text = table_text(rows)
    assert text.count("\n") == 3 and "| model | layout |" in text


def test_scan_models_loads_each_model_at_its_own_patch_multiple():
    from vitreg.measure.scan import scan_models, scan_table

    reports = scan_models(["dinov2_s_reg", "dinov3_s"], _images(2, 64), pretrained=False, image_size=64,
                          progress=False)
    assert [r.model["image_size"] for r in reports] == [[70, 70], [64, 64]]  # 5x5 of 14 px, 4x4 of 16 px
    assert [row["layout"] for row in scan_table(reports)] == ["1 + 4 + 5x5", "1 + 4 + 4x4"]
