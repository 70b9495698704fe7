"""Parameters: ranges checked before anything runs, profiles checked as a whole (issue 12, "Inputs")."""

from __future__ import annotations

import re

import pytest

from vitreg.params import RULES, ParameterError, load_order, load_profile, notebook_defaults, validate
from vitreg.paths import repo_root

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
def test_every_notebooks_defaults_and_smoke_profile_are_in_range(path):
    defaults = notebook_defaults(path)
    assert validate(path, {}) == defaults
    validate(path, load_profile("smoke", path.stem))
    assert [n for n in defaults if n in RULES], "the table covers the notebook's parameters"


@pytest.mark.robustness("clear error")
def test_every_problem_is_listed_at_once():
    with pytest.raises(ParameterError) as err:
        validate(NB["02"], {"n_images": -1, "batch_size": 0})
    assert "'n_images' = -1" in str(err.value) and "'batch_size' = 0" in str(err.value)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params").mkdir()
    (tmp_path / "notebooks" / "order.yaml").write_text("- notebook: 00_tour\n- notebook: 02_high_norm_tokens\n")
    return tmp_path


@pytest.mark.robustness("clear error")
def test_misspelled_profile_section_is_rejected_with_close_names(project):
    path = project / "params" / "smoke.yaml"
    path.write_text("common:\n  profile: smoke\nnotebooks:\n  00_tuor:\n    n_images: 2\n")
    with pytest.raises(ParameterError, match=r"smoke\.yaml.*'00_tuor'.*did you mean 00_tour"):
        load_profile("smoke", "02_high_norm_tokens", path)


@pytest.mark.robustness("clear error")
def test_malformed_profile_yaml_names_file_and_line(project):
    path = project / "params" / "smoke.yaml"
    path.write_text("common:\n  profile: smoke\nnotebooks:\n  00_tour:\n    n_images: [2\n  02_high_norm_tokens:\n")
    with pytest.raises(ParameterError) as err:
        load_profile("smoke", "00_tour", path)
    assert re.search(rf"{re.escape(str(path))}:\d+: not valid YAML", str(err.value)), str(err.value)


@pytest.mark.robustness("clear error")
def test_notebooks_given_as_a_list_is_a_clear_error(project):
    path = project / "params" / "smoke.yaml"
    path.write_text("common:\n  profile: smoke\nnotebooks:\n  - 00_tour:\n      n_images: 2\n")
    with pytest.raises(ParameterError, match=r"'notebooks' must be a mapping.*got a list"):
        load_profile("smoke", "00_tour", path)


@pytest.mark.robustness("clear error")
def test_a_section_that_is_not_a_mapping_is_an_error(project):
    path = project / "params" / "smoke.yaml"
    path.write_text("notebooks:\n  00_tour: 3\n")
    with pytest.raises(ParameterError, match=r"section '00_tour' must be a mapping"):
        load_profile("smoke", "00_tour", path)


def test_the_shipped_smoke_profile_is_well_formed():
    for name in NB.values():
        load_profile("smoke", name.stem)  # every section is a notebook of the run order
