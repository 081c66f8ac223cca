import pytest

from recsys.config import ConfigError, load_config
from recsys.models.item_towers import TOWERS, ItemTowerConfig
from recsys.models.json_encoder import JsonEncoderConfig
from recsys.models.persona import PersonaModelConfig
from recsys.models.registry import architecture, architectures, named_config


def test_every_block_builds_its_config():
    classes = {"item_tower": ItemTowerConfig, "json_encoder": JsonEncoderConfig, "persona": PersonaModelConfig}
    blocks = architectures()
    assert {"json_encoder", "concat", "coarse_to_fine", "unified", "metric_adapter", "persona"} <= set(blocks)
    for name, block in blocks.items():
        if block["kind"] in classes:
            config = named_config(name, classes[block["kind"]], block["kind"], drop=("tower",))
            assert isinstance(config, classes[block["kind"]])
        if block["kind"] == "item_tower":
            assert block["tower"] in TOWERS


def test_unknown_names_and_wrong_kinds_are_config_errors():
    with pytest.raises(ConfigError, match="not in"):
        architecture("no_such_model")
    with pytest.raises(ConfigError, match="expected 'persona'"):
        architecture("unified", kind="persona")


def test_stage_configs_accept_a_block_name_or_the_block(tmp_path):
    from recsys.data.json_features import TrainJsonEncoderConfig
    from recsys.train_loops.item_tower import TrainItemTowerConfig
    from recsys.train_loops.persona import TrainPersonaConfig

    path = tmp_path / "c.yaml"
    path.write_text("tower: coarse_to_fine\n")
    named = load_config(path, TrainItemTowerConfig)
    assert named.tower_name == "coarse_to_fine" and named.tower.title_mode == "tokens"
    path.write_text("tower_name: concat\ntower: {heads: 2}\n")
    spelled = load_config(path, TrainItemTowerConfig)
    assert spelled.tower_name == "concat" and spelled.tower.heads == 2
    path.write_text("encoder: json_encoder\n")
    assert load_config(path, TrainJsonEncoderConfig).encoder.multi_fields == ["style", "material", "detail", "print"]
    path.write_text("model: persona\n")
    assert load_config(path, TrainPersonaConfig).model == PersonaModelConfig(**{
        k: v for k, v in architecture("persona").items() if k != "kind"})
