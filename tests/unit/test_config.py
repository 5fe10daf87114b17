"""Settings: file, environment and flags in that order of strength; clear errors."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from heartmon.config import ConfigError, Settings, load_settings

EXAMPLE = Path(__file__).parents[2] / "config" / "heartmon.example.toml"


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _keys(annotation, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_the_example_documents_every_key_and_loads_as_the_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("HEARTMON_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # no user config: the defaults
    text = EXAMPLE.read_text()
    section, documented = "", set()
    for line in text.splitlines():
        if m := re.match(r"^\[(.+)\]$", line):
            section = m.group(1) + "."
        elif m := re.match(r"^#? ?(\w+) = ", line):
            documented.add(section + m.group(1))
    assert _keys(Settings) == documented
    assert load_settings(EXAMPLE).model_dump() == load_settings().model_dump()


def test_flags_beat_environment_beat_file(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text('sources = ["ws://file:1"]\n[detector]\nlate_after = 3.0\nstarved_after = 6.0\n')
    assert load_settings(config).detector.late_after == 3.0
    monkeypatch.setenv("HEARTMON_DETECTOR__LATE_AFTER", "4")
    monkeypatch.setenv("HEARTMON_SOURCES", '["ws://env:1"]')
    settings = load_settings(config)
    assert (settings.detector.late_after, settings.detector.starved_after) == (4.0, 6.0)
    assert settings.sources == ["ws://env:1"]
    flagged = load_settings(config, {"detector": {"late_after": 5.0}, "sources": ["ws://flag:1"]})
    assert (flagged.detector.late_after, flagged.detector.starved_after, flagged.sources) == (5.0, 6.0, ["ws://flag:1"])


def test_the_user_config_directory_is_read(tmp_path, monkeypatch):
    (tmp_path / "heartmon").mkdir()
    (tmp_path / "heartmon" / "config.toml").write_text('[detector]\nrule = "phi"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert load_settings().detector.rule == "phi"


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ("[detector]\nlate_after = -1\n", "detector.late_after: Input should be greater than 0 (got -1)"),
        ("[detector]\nrule = 'magic'\n", "detector.rule: Input should be 'fixed' or 'phi'"),
        ("[detector]\nstarved_after = 1.0\n", "late_after <= starved_after <= dead_after"),
        ("[monitor]\nbogus = 1\n", "monitor.bogus: Extra inputs are not permitted"),
        ("[hub\n", "is not valid TOML"),
        # Infinite or NaN numbers are refused by key: a threshold of inf would never alarm.
        ("[detector]\nlate_after = inf\nstarved_after = inf\ndead_after = inf\n",
         "detector.late_after: Input should be a finite number"),
        ("[detector]\ndead_after = inf\n", "detector.dead_after: Input should be a finite number"),
        ("[detector]\nbusy_after = nan\n", "detector.busy_after: Input should be a finite number"),
        ("[detector.phi]\nthreshold = inf\n", "detector.phi.threshold: Input should be a finite number"),
        ("[detector.phi]\nacceptable_pause_s = inf\n",
         "detector.phi.acceptable_pause_s: Input should be a finite number"),
        ("[hub]\nmax_duration_s = inf\n", "hub.max_duration_s: Input should be a finite number"),
    ],
)
def test_invalid_values_name_the_key_and_the_reason(tmp_path, toml, says):
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_settings(config)


def test_an_unparsable_environment_variable_names_the_field(monkeypatch):
    monkeypatch.setenv("HEARTMON_SOURCES", "ws://not-a-json-list:1")
    with pytest.raises(ConfigError, match='field "sources" from source "EnvSettingsSource"'):
        load_settings()


def test_a_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_the_cli_exits_2_with_the_message_and_no_traceback(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[detector]\nlate_after = 0\n")
    result = subprocess.run([sys.executable, "-m", "heartmon", "check", "ws://127.0.0.1:1", "--config", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "detector.late_after: Input should be greater than 0" in result.stderr
    assert "Traceback" not in result.stderr
