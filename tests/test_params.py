"""Parameters: each experiment's kinds checked before anything runs, override files checked as a whole."""

from __future__ import annotations

import re

import pytest

from vitreg.experiments.catalog import experiment
from vitreg.experiments.params import (ParameterError, cell_experiment, given_parameters, load_order, load_profile,
                                       parse_set, read_overrides, validate)
from vitreg.utils.paths import repo_root

ROOT = repo_root()
NB = {e["notebook"][:2]: ROOT / "notebooks" / f"{e['notebook']}.ipynb" for e in load_order()}


@pytest.mark.parametrize("nb, name, value, allowed", [
    ("02", "n_images", -1, "integer >= 1"),
    ("02", "n_images", 0, "integer >= 1"),
    ("02", "n_images", None, "integer >= 1"),
    ("05", "train_fraction", 1.5, "strictly between 0 and 1"),
    ("05", "train_fraction", 0.0, "strictly between 0 and 1"),
    ("06", "val_fraction", 1, "strictly between 0 and 1"),
    ("02", "batch_size", 0, "integer >= 1"),
    ("02", "n_bootstrap", 0, "integer >= 1"),
    ("02", "image_size", "112", "positive integer"),
    ("02", "image_size", -112, "positive integer"),
    ("09", "nyud_image_size", [476, 0], "[height, width]"),
    ("08", "limit", -3, "integer >= 1"),
    ("08", "limit", 2.5, "integer >= 1"),
    ("06", "n_draws", 0, "integer >= 1"),
    ("02", "n_images", True, "integer >= 1"),
    ("05", "image_dir", 3, "a string"),
    ("05", "threshold", "high", "a number > 0"),
    ("05", "threshold", -1.0, "a number > 0"),
    ("05", "l2_grid", [], "non-empty list"),
    ("02", "images", "imagnet", "one of 'auto'"),
    ("07", "images", None, "one of 'auto'"),
])
@pytest.mark.robustness("clear error")
def test_out_of_range_parameter_is_named_with_its_range(nb, name, value, allowed):
    with pytest.raises(ParameterError) as err:
        validate(NB[nb], {name: value})
    msg = str(err.value)
    assert msg.startswith(NB[nb].name), msg  # the notebook
    assert repr(name) in msg and repr(value) in msg and allowed in msg, msg


@pytest.mark.robustness("handled")
def test_none_is_allowed_exactly_where_the_default_is_none():
    assert validate(NB["05"], {"threshold": None, "image_dir": "/data/x"})["threshold"] is None
    assert validate(NB["05"], {"threshold": 12.5})["threshold"] == 12.5
    assert validate(NB["08"], {"limit": None})["limit"] is None
    assert validate(NB["01"], {"image_size": None})["image_size"] is None
    assert validate(NB["09"], {"nyud_image_size": [224, 308]})["nyud_image_size"] == [224, 308]
    with pytest.raises(ParameterError, match=r"'threshold' = None.*number > 0"):
        validate(NB["02"], {"threshold": None})  # 02 needs a threshold


@pytest.mark.parametrize("path", sorted(NB.values()), ids=lambda p: p.stem)
def test_every_notebooks_defaults_and_profiles_are_in_range(path):
    assert validate(path, {}) == experiment(path.stem).defaults()
    for profile in ("smoke", "lecture"):
        validate(path, load_profile(profile, path.stem))


@pytest.mark.robustness("clear error")
def test_every_problem_is_listed_at_once():
    with pytest.raises(ParameterError) as err:
        validate(NB["02"], {"n_images": -1, "batch_size": 0})
    assert "'n_images' = -1" in str(err.value) and "'batch_size' = 0" in str(err.value)


@pytest.mark.robustness("clear error")
def test_misspelled_section_of_an_overrides_file_is_rejected_with_close_names(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("common:\n  seed: 1\nnotebooks:\n  00_tuor:\n    n_images: 2\n")
    with pytest.raises(ParameterError, match=r"my\.yaml.*'00_tuor'.*did you mean 00_tour"):
        read_overrides(path)


@pytest.mark.robustness("clear error")
def test_malformed_overrides_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("common:\n  seed: 1\nnotebooks:\n  00_tour:\n    n_images: [2\n  02_high_norm_tokens:\n")
    with pytest.raises(ParameterError) as err:
        read_overrides(path)
    assert re.search(rf"{re.escape(str(path))}:\d+: not valid YAML", str(err.value)), str(err.value)


@pytest.mark.robustness("clear error")
def test_notebooks_given_as_a_list_is_a_clear_error(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("notebooks:\n  - 00_tour:\n      n_images: 2\n")
    with pytest.raises(ParameterError, match=r"'notebooks' must be a mapping.*got a list"):
        read_overrides(path)


@pytest.mark.robustness("clear error")
def test_a_section_that_is_not_a_mapping_is_an_error(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("notebooks:\n  00_tour: 3\n")
    with pytest.raises(ParameterError, match=r"section '00_tour' must be a mapping"):
        read_overrides(path)


def test_the_profiles_come_from_the_experiments_not_from_files():
    assert not (ROOT / "params").exists(), "the profiles live in vitreg/experiments/<name>.py"
    assert load_profile("smoke", "10_test_time_registers")["plant"] is True
    assert load_profile("lecture", "00_tour") == {"profile": "lecture", "pretrained": True, "device": "auto",
                                                  **experiment("00_tour").profiles["lecture"]}
    assert load_profile("real", "00_tour") == {"profile": "real"}
    with pytest.raises(ParameterError, match="unknown profile"):
        load_profile("fast", "00_tour")


def test_a_notebook_outside_the_catalog_runs_on_an_experiment_made_from_its_cell(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    path = tmp_path / "01_own.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("seed = 0\nn_images = 4\nrate = 0.5\nname = None",
                                                     metadata={"tags": ["parameters"]})]), path)
    own = cell_experiment(path, {"smoke": {"n_images": 2}})
    assert own.defaults() == {"seed": 0, "n_images": 4, "rate": 0.5, "name": None}
    assert own.kinds() == {"seed": "int", "n_images": "int", "rate": "number", "name": "str"}
    assert validate(path, {"n_images": 3, "name": "x"}, own)["n_images"] == 3
    with pytest.raises(ParameterError, match=r"'n_images' = 'many'.*an integer"):
        validate(path, {"n_images": "many"}, own)
    with pytest.raises(ParameterError, match="no experiment module"):
        validate(path, {})  # not in the catalog, and none passed in


def test_smoke_stays_on_the_bundled_photos_and_the_real_run_on_natural_images():
    """the real defaults of 00-04, 07, 10 and 11 are natural images (>= 256 where images are
    scored, not drawn), the smoke profile the bundled photos."""
    having = [p for p in NB.values() if "images" in experiment(p.stem).defaults()]
    assert {"00", "01", "02", "03", "04", "07", "10", "11"} <= {p.stem[:2] for p in having}
    for path in having:
        defaults = experiment(path.stem).defaults()
        assert defaults["images"] == "auto" and defaults["image_dir"] is None
        assert defaults["n_images"] >= 256 or path.stem == "00_tour", path.stem  # the tour draws each image
        assert load_profile("smoke", path.stem)["images"] == "photos", path.stem


@pytest.mark.parametrize("item, expected", [
    ("02_high_norm_tokens.n_images=512", ("02_high_norm_tokens", "n_images", 512)),
    ("02.n_images=512", ("02_high_norm_tokens", "n_images", 512)),
    ("common.device=cuda", ("common", "device", "cuda")),
    ("07.image_dir=null", ("07_registers", "image_dir", None)),
    ("03.size_models=[dinov2_s, dinov2_b]", ("03_emergence", "size_models", ["dinov2_s", "dinov2_b"])),
    ("05.threshold=12.5", ("05_local_information", "threshold", 12.5)),
    ("01.upsample_mode=a=b", ("01_attention_artifacts", "upsample_mode", "a=b")),
])
def test_set_items_are_parsed_as_yaml(item, expected):
    assert parse_set(item, [p.stem for p in NB.values()]) == expected


@pytest.mark.parametrize("item, match", [
    ("n_images=5", "NOTEBOOK.PARAMETER=VALUE"),
    ("02.n_images", "NOTEBOOK.PARAMETER=VALUE"),
    ("02_high_norm_tokns.n_images=5", "'02_high_norm_tokns' is not 'common' nor a notebook.*did you mean 02_high_norm_tokens"),
    ("99.n_images=5", "'99' is not"),
    ("02.n_images={a: 1}", "scalar or a list"),
])
def test_a_bad_set_item_is_named(item, match):
    with pytest.raises(ParameterError, match=match):
        parse_set(item, [p.stem for p in NB.values()])


def test_overrides_layer_profile_then_file_then_set(tmp_path):
    known = [p.stem for p in NB.values()]
    mine = tmp_path / "my.yaml"
    mine.write_text("common:\n  device: cuda:1\nnotebooks:\n  02_high_norm_tokens:\n    n_images: 64\n    seed: 5\n")
    over = read_overrides(mine, ["02.n_images=512", "common.image_dir=/data/imgs"], known)
    given = given_parameters("smoke", ["02_high_norm_tokens", "08_lost"], overrides=over)
    two, eight = given["02_high_norm_tokens"], given["08_lost"]
    assert two["n_images"] == 512 and two["seed"] == 5 and two["device"] == "cuda:1"  # --set > file > profile
    assert two["image_dir"] == "/data/imgs" and two["pretrained"] is False  # the profile below stays
    assert eight["device"] == "cuda:1" and "image_dir" not in eight  # common goes where the parameter exists
    assert given_parameters("real", ["02_high_norm_tokens"], overrides=over)["02_high_norm_tokens"]["profile"] == "real"


@pytest.mark.parametrize("content, sets, match", [
    ("notebooks:\n  02_hgh_norm_tokens:\n    n_images: 5\n", [], "'02_hgh_norm_tokens' is not a notebook"),
    ("common:\n  n_imagse: 5\n", [], "common parameter 'n_imagse' is not a parameter of any notebook.*n_images"),
    ("", ["common.output_dir=/tmp/x"], "'output_dir' \\(use --out DIR\\)"),
    ("", ["02.profile=real"], "'profile' \\(use --profile\\)"),
    ("notebooks: [1]\n", [], "must be a mapping"),
])
def test_a_bad_override_is_an_error_naming_it(tmp_path, content, sets, match):
    mine = tmp_path / "my.yaml"
    mine.write_text(content)
    with pytest.raises(ParameterError, match=match):
        given_parameters("real", ["02_high_norm_tokens"],
                         overrides=read_overrides(mine, sets, [p.stem for p in NB.values()]))


def test_a_common_override_is_range_checked_even_where_no_chosen_notebook_has_it():
    over = read_overrides(None, ["common.n_draws=0"], [p.stem for p in NB.values()])
    with pytest.raises(ParameterError, match="'n_draws' = 0 is out of range"):
        given_parameters("real", ["02_high_norm_tokens"], overrides=over)


def test_a_missing_params_file_is_named(tmp_path):
    with pytest.raises(ParameterError, match="no such parameters file"):
        read_overrides(tmp_path / "nope.yaml", [], [p.stem for p in NB.values()])
