from dataclasses import dataclass, field

import pytest

from recsys.config import ConfigError, config_hash, load_config, parse_overrides


@dataclass
class Inner:
    rate: float = 0.1
    names: list[str] = field(default_factory=list)


@dataclass
class Outer:
    path: str
    size: int = 3
    inner: Inner = field(default_factory=Inner)
    optional: str | None = None


def test_load_nested_config_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("path: /data\ninner:\n  rate: 1\n  names: [a, b]\n")
    cfg = load_config(path, Outer, parse_overrides(["size=7", "inner.names=[x]"]))
    assert cfg == Outer("/data", 7, Inner(1.0, ["x"]))
    assert config_hash(cfg) == config_hash(Outer("/data", 7, Inner(1.0, ["x"])))
    assert config_hash(cfg) != config_hash(Outer("/data", 8, Inner(1.0, ["x"])))


@pytest.mark.parametrize("text, message", [
    ("path: /d\nsize: many\n", "size: expected int, found str 'many'"),
    ("path: /d\nsiez: 3\n", "unknown key(s) ['siez']"),
    ("size: 3\n", "missing required key(s) ['path']"),
    ("path: /d\ninner: [1]\n", "inner: expected a mapping for Inner"),
])
def test_config_errors_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path, Outer)
    assert message in str(error.value) and str(path) in str(error.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", Outer)
