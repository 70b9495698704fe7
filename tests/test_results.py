"""Results files: provenance recorded, strict JSON, reasons instead of NaN, atomic writes."""

from __future__ import annotations

import json

import pytest

from vitreg.results import REQUIRED_KEYS, finite_or_skipped, load_results, save_results
from vitreg.weights import load_model


def test_results_record_models_params_and_versions(tmp_path):
    loaded = load_model("dinov2_s_reg", pretrained=False, image_size=56)
    path = save_results("99_test", {"x": 1.5}, models=[loaded], params={"profile": "smoke", "n": 3, "fn": print},
                        output_dir=tmp_path)
    record = load_results(path)
    assert set(REQUIRED_KEYS) <= set(record)
    assert record["random_weights"] is True and record["profile"] == "smoke"
    model = record["models"][0]
    assert (model["name"], model["tag"], model["image_size"], model["dtype"]) == ("dinov2_s_reg", "lvd142m", [56, 56], "float32")
    assert record["params"] == {"profile": "smoke", "n": 3}  # what is not JSON is left out
    assert {"torch", "timm", "python"} <= set(record["versions"])


def test_nan_is_refused_and_reasons_are_kept(tmp_path):
    with pytest.raises(ValueError):
        save_results("99_nan", {"x": float("nan")}, output_dir=tmp_path)
    assert not list((tmp_path / "results").glob("*"))  # nothing half-written left behind
    assert finite_or_skipped(2.5, "x") == 2.5
    assert finite_or_skipped(float("nan"), "no outliers") == {"skipped": "no outliers"}


def test_load_results_names_a_bad_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"numbers": {}}))
    with pytest.raises(ValueError, match="bad.json.*missing"):
        load_results(bad)
