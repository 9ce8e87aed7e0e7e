"""Configuration: file, environment, defaults, and one clear line for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_settings
from bot.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HELPDESK_CONFIG", raising=False)
    settings = load_settings()
    assert settings.database.url == "sqlite+aiosqlite:///var/helpdesk.db"
    assert settings.kb.model == ""
    assert settings.telegram.token.get_secret_value() == ""
    assert 0 < settings.kb.suggest_threshold < settings.kb.answer_threshold < 1


def test_example_config_is_valid_and_matches_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HELPDESK_CONFIG", raising=False)
    example = load_settings(Path(__file__).resolve().parents[1] / "config.example.toml")
    assert example.model_dump() == load_settings().model_dump()


def test_file_then_environment_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path, '[kb]\nanswer_threshold = 0.8\nsuggest_threshold = 0.5\n[telegram]\ntoken = "1:file"\n'
    )
    monkeypatch.setenv("HELPDESK_TELEGRAM__TOKEN", "1:env")
    settings = load_settings(path)
    assert settings.kb.answer_threshold == 0.8
    assert settings.telegram.token.get_secret_value() == "1:env"


def test_config_env_var_picks_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "HELPDESK_CONFIG", str(write(tmp_path, '[database]\nurl = "sqlite+aiosqlite:///x.db"\n'))
    )
    assert load_settings().database.url == "sqlite+aiosqlite:///x.db"


def test_token_is_never_shown(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, '[telegram]\ntoken = "123:SECRET"\n'))
    assert "SECRET" not in repr(settings)
    assert "SECRET" not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[kb\n", "invalid TOML"),
        ("[kb]\nanswer_treshold = 0.5\n", "unknown key kb.answer_treshold"),
        ("[bogus]\nx = 1\n", "unknown key bogus"),
        ('[kb]\nanswer_threshold = "high"\n', "kb.answer_threshold"),
        ("[kb]\nanswer_threshold = 1.5\n", "kb.answer_threshold"),
        ("[kb]\nanswer_threshold = 0.3\nsuggest_threshold = 0.4\n", "must not exceed"),
        ("[kb]\ncross_lingual_suggest_threshold = 0.9\n", "cross_lingual_suggest_threshold (0.9) must not"),
        ("[kb]\nmargin_floor = 0.4\n", "margin_floor (0.4) must lie between"),
        ("[kb]\nanswer_threshold = 0.7\nmargin_floor = 0.75\n", "margin_floor (0.75) must lie between"),
        ('[telegram]\napi_url = "localhost:8081"\n', "api_url must start with http"),
        ('[database]\nurl = "helpdesk.db"\n', "database"),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_bad_environment_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELPDESK_KB__SUGGEST_THRESHOLD", "lots")
    with pytest.raises(ConfigError, match=r"kb\.suggest_threshold"):
        load_settings()
