"""Results files: provenance recorded, strict JSON, reasons instead of NaN, atomic writes."""

from __future__ import annotations

import json

import pytest

from vitreg.utils.results import (REQUIRED_KEYS, RESULTS_SCHEMA, ResultsSchemaError, clean_numbers, envelope_problems,
                            finite_or_skipped, load_results, save_results)
from vitreg.core.weights import load_model


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


def test_clean_numbers_turns_every_non_finite_float_into_a_reason(tmp_path):
    import numpy as np
    import torch

    dirty = {"a": float("nan"), 0.1: [1.0, float("inf")], "t": torch.tensor([1.0, float("nan")]),
             "n": np.float64("-inf"), "k": (2, "x", None), "ok": {"deep": [float("nan")]}}
    clean = clean_numbers(dirty, "no outliers")
    skip = {"skipped": "no outliers"}
    assert clean == {"a": skip, "0.1": [1.0, skip], "t": [1.0, skip], "n": skip, "k": [2, "x", None],
                     "ok": {"deep": [skip]}}
    path = save_results("99_clean", clean, output_dir=tmp_path)  # strict JSON now
    assert load_results(path)["numbers"]["a"] == skip


def test_one_schema_for_writing_reading_and_the_report(tmp_path):
    path = save_results("99_schema", {"x": 1.0}, models=[{"name": "m", "pretrained": True}], output_dir=tmp_path)
    record = json.loads(path.read_text())
    assert envelope_problems(record, "99_schema") == [] and RESULTS_SCHEMA["required"] == list(REQUIRED_KEYS)
    record["random_weights"] = "no"
    assert envelope_problems(record) == ["'random_weights' is str, expected bool"]
    path.write_text(json.dumps(record))
    with pytest.raises(ResultsSchemaError, match="'random_weights' is str"):
        load_results(path)
    with pytest.raises(ResultsSchemaError, match="models\\[0\\] needs a bool 'pretrained'"):
        save_results("99_schema", {"x": 1.0}, models=[{"name": "m"}], output_dir=tmp_path)
    assert "file is named other.json" in envelope_problems(json.loads(json.dumps({**record, "random_weights": True})),
                                                           "other")[0]
