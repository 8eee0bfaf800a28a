"""The recipe model: validation errors name the file and field; the hash tracks values, not formatting."""

from pathlib import Path

import pytest
import yaml

from synqa_dagster.config import ConfigError, load_gate_config, load_recipe
from tests.conftest import REPO_ROOT, write_recipe


def test_demo_recipe_and_gate_config_load():
    recipe = load_recipe(REPO_ROOT / "recipes" / "demo.yaml")
    gates = load_gate_config(REPO_ROOT / "gates" / "default.yaml")
    assert len(recipe.content_hash()) == 12 and len(gates.content_hash()) == 12
    assert recipe.template(recipe.response_template_id)


def test_hash_ignores_formatting_but_tracks_values(tmp_path: Path):
    base = load_recipe(REPO_ROOT / "recipes" / "demo.yaml")
    reformatted = tmp_path / "same.yaml"
    data = yaml.safe_load((REPO_ROOT / "recipes" / "demo.yaml").read_text())
    reformatted.write_text("# a comment\n" + yaml.safe_dump(data, sort_keys=True, indent=4))
    assert load_recipe(reformatted).content_hash() == base.content_hash()
    changed = write_recipe(tmp_path / "changed.yaml", **{"generator.sampling.temperature": 0.9})
    assert load_recipe(changed).content_hash() != base.content_hash()


@pytest.mark.parametrize(
    "override, field",
    [
        ({"generator.sampling.temperature": 5.0}, "generator.sampling.temperature"),
        ({"generator.backend": "gpt-in-a-box"}, "generator.backend"),
        ({"response_template_id": "nope.v9"}, "missing template ids"),
        ({"expansion_factor": 0}, "expansion_factor"),
    ],
)
def test_invalid_recipe_names_file_and_field(tmp_path: Path, override, field):
    path = write_recipe(tmp_path / "bad.yaml", **override)
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_unknown_key_is_rejected(tmp_path: Path):
    path = write_recipe(tmp_path / "typo.yaml", **{"generator.temprature": 0.3})
    with pytest.raises(ConfigError, match="generator.temprature"):
        load_recipe(path)


def test_openai_backend_needs_base_url(tmp_path: Path):
    path = write_recipe(tmp_path / "openai.yaml", **{"generator.backend": "openai"})
    with pytest.raises(ConfigError, match="base_url"):
        load_recipe(path)


def test_invalid_gate_config_names_file_and_field(tmp_path: Path):
    data = yaml.safe_load((REPO_ROOT / "gates" / "default.yaml").read_text())
    data["dedup"]["threshold"] = 1.7
    data["toxicity"]["backend"] = "detoxify"  # no checkpoint and no download allowed
    path = tmp_path / "gates.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_gate_config(path)
    assert str(path) in str(err.value) and "field dedup.threshold" in str(err.value) and "field toxicity" in str(err.value)
