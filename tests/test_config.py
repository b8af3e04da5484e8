"""Settings: defaults, environment parsing, sizes, a clear error naming the variable for every bad value."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dqd_server import cli
from dqd_server.config import GRPC_MAX_MESSAGE, Settings, SettingsError, parse_size, settings_markdown
from dqd_server.engine.repository import BUNDLED_RULES

GUIDE = {  # the deployment guide's production example, minus what dqd refuses (API_KEY_REQUIRED=true)
    "ENVIRONMENT": "production", "LOG_LEVEL": "INFO", "DEBUG": "false", "API_HOST": "0.0.0.0", "API_PORT": "8080",
    "API_WORKERS": "4", "MODEL_CACHE_SIZE": "10", "MODEL_DEVICE": "cuda", "MAX_BATCH_SIZE": "1000",
    "MAX_FILE_SIZE": "1GB", "ENABLE_CACHE": "true", "CACHE_TTL": "3600", "PARALLEL_WORKERS": "8",
    "RATE_LIMIT": "100", "CORS_ORIGINS": "https://your-domain.com", "METRICS_ENABLED": "true",
    "METRICS_PORT": "9090", "TRACING_ENABLED": "true",
}


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert (s.environment, s.debug, s.log_level, s.api_host, s.api_port, s.api_workers) == (
        "development", False, "INFO", "0.0.0.0", 50051, 1)
    assert s.model_path == BUNDLED_RULES and s.model_device == "auto" and s.model_cache_size == 10
    assert s.data_path == Path("./data") and s.database_url == ""
    assert s.effective_database_url.startswith("sqlite:///") and s.effective_database_url.endswith("dqd.db")
    assert (s.max_batch_size, s.max_file_size, s.max_rows_per_call) == (1_000_000, 64 * 1024**2, 10_000)
    assert (s.metrics_enabled, s.metrics_port, s.tracing_enabled) == (True, 9090, False)
    assert (s.api_key_required, s.rate_limit, s.cors_origins) == (False, 0, "")
    assert (s.shutdown_delay, s.shutdown_grace) == (1.0, 30.0)
    assert s.unenforced() == []


def test_the_deployment_guide_example_parses(tmp_path: Path) -> None:
    s = Settings.from_env({**GUIDE, "MODEL_PATH": str(BUNDLED_RULES), "DATA_PATH": str(tmp_path)})
    assert (s.environment, s.api_port, s.api_workers, s.model_device) == ("production", 8080, 4, "cuda")
    assert (s.max_batch_size, s.max_file_size, s.parallel_workers) == (1000, 1_000_000_000, 8)
    assert s.enable_cache and s.tracing_enabled and s.rate_limit == 100
    notes = " ".join(s.unenforced())
    for name in ("RATE_LIMIT", "TRACING_ENABLED", "CORS_ORIGINS"):
        assert name in notes


def test_env_parsing(tmp_path: Path) -> None:
    s = Settings.from_env({
        "ENVIRONMENT": "Staging", "DEBUG": "yes", "LOG_LEVEL": "warning", "API_HOST": "127.0.0.1",
        "API_PORT": "0", "API_WORKERS": "3", "MODEL_PATH": str(BUNDLED_RULES), "MODEL_DEVICE": "CPU",
        "DATA_PATH": str(tmp_path), "DATABASE_URL": "postgresql://dqd@db/dqd", "MAX_BATCH_SIZE": "250_000",
        "MAX_FILE_SIZE": "8MiB", "MAX_ROWS_PER_CALL": "5", "ENABLE_CACHE": "on", "CACHE_TTL": "60",
        "PARALLEL_WORKERS": "2", "API_KEY_REQUIRED": "0", "RATE_LIMIT": "0", "METRICS_ENABLED": "off",
        "METRICS_PORT": "0", "TRACING_ENABLED": "false", "SHUTDOWN_DELAY": "0.5", "SHUTDOWN_GRACE": "2",
        "UNRELATED": "ignored", "API_WORKERS_EXTRA": "ignored",
    })
    assert (s.environment, s.debug, s.log_level, s.effective_log_level) == ("staging", True, "WARNING", "DEBUG")
    assert (s.api_host, s.api_port, s.api_workers, s.model_device) == ("127.0.0.1", 0, 3, "cpu")
    assert s.data_path == tmp_path and s.effective_database_url == "postgresql://dqd@db/dqd"
    assert (s.max_batch_size, s.max_file_size, s.max_rows_per_call) == (250_000, 8 * 1024**2, 5)
    assert (s.enable_cache, s.cache_ttl, s.parallel_workers, s.metrics_enabled, s.metrics_port) == (
        True, 60, 2, False, 0)
    assert (s.shutdown_delay, s.shutdown_grace) == (0.5, 2.0)


def test_empty_values_mean_default_and_flags_win() -> None:
    s = Settings.from_env({"API_PORT": "", "API_WORKERS": "2", "METRICS_PORT": "9100"},
                          api_port=7000, api_workers=None, metrics_port=0)
    assert (s.api_port, s.api_workers, s.metrics_port) == (7000, 2, 0)


@pytest.mark.parametrize(("text", "size"), [
    ("123", 123), ("64MB", 64_000_000), ("64mb", 64_000_000), ("1GB", 10**9), ("1GiB", 2**30),
    ("1.5MB", 1_500_000), (" 8 MiB ", 8 * 2**20), ("10K", 10_000), ("2KiB", 2048), ("7B", 7),
])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size
    assert Settings.from_env({"MAX_FILE_SIZE": text}).max_file_size == size


@pytest.mark.parametrize(("name", "value"), [
    ("ENVIRONMENT", "prod"), ("DEBUG", "maybe"), ("LOG_LEVEL", "LOUD"), ("API_HOST", " "),
    ("API_PORT", "http"), ("API_PORT", "70000"), ("API_PORT", "-1"), ("API_WORKERS", "0"), ("API_WORKERS", "two"),
    ("MODEL_PATH", "/no/such/rules"), ("MODEL_CACHE_SIZE", "0"), ("MODEL_DEVICE", "tpu"),
    ("DATA_PATH", __file__), ("DATABASE_URL", "just-a-name"), ("MAX_BATCH_SIZE", "0"), ("MAX_BATCH_SIZE", "1e6"),
    ("MAX_FILE_SIZE", "big"), ("MAX_FILE_SIZE", "64XB"), ("MAX_FILE_SIZE", "0"), ("MAX_FILE_SIZE", "4GB"),
    ("MAX_ROWS_PER_CALL", "-5"), ("ENABLE_CACHE", "2"), ("CACHE_TTL", "-1"), ("PARALLEL_WORKERS", "-1"),
    ("API_KEY_REQUIRED", "true"), ("API_KEY_REQUIRED", "sure"), ("RATE_LIMIT", "-3"), ("RATE_LIMIT", "fast"),
    ("METRICS_ENABLED", "perhaps"), ("METRICS_PORT", "65536"), ("METRICS_PORT", "50051"),
    ("TRACING_ENABLED", "2"), ("SHUTDOWN_DELAY", "-1"), ("SHUTDOWN_DELAY", "soon"), ("SHUTDOWN_GRACE", "nan"),
    ("SHUTDOWN_GRACE", "-0.5"),
])
def test_every_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    assert str(info.value).startswith(name), str(info.value)


def test_max_file_size_limit_is_grpcs() -> None:
    assert Settings.from_env({"MAX_FILE_SIZE": str(GRPC_MAX_MESSAGE)}).max_file_size == GRPC_MAX_MESSAGE


def test_every_setting_is_described_and_documented() -> None:
    described = Settings.describe()
    assert [name for name, _, _ in described] == [f.name.upper() for f in dataclasses.fields(Settings)]
    for name, default, text in described:
        assert default, name
        assert len(text) > 10, f"{name} has no help text"
    table = settings_markdown()
    for name, _, _ in described:
        assert f"| `{name}`" in table
    assert "| `MAX_FILE_SIZE` | `64MiB` |" in table and "| `DATA_PATH` | `./data` |" in table


def test_to_env_round_trips() -> None:
    s = dataclasses.replace(Settings(), environment="staging", debug=True, api_port=1234, api_workers=3,
                            max_file_size=12_345, metrics_enabled=False, shutdown_grace=2.5,
                            database_url="sqlite:////tmp/x.db")
    assert Settings.from_env(s.to_env()) == s


def test_cli_exits_2_with_a_clear_message(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("API_WORKERS", "0")
    with pytest.raises(SystemExit) as info:
        cli.main(["serve"])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("dqd: configuration error: API_WORKERS=0")
    monkeypatch.delenv("API_WORKERS")
    with pytest.raises(SystemExit) as info:
        cli.main(["serve", "--metrics-port", "99999"])
    assert info.value.code == 2 and "METRICS_PORT=99999" in capsys.readouterr().err


def test_cli_config_lists_settings(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    cli.main(["config", "--markdown"])
    assert "| `API_WORKERS` / `--workers` | `1` |" in capsys.readouterr().out
    monkeypatch.setenv("API_WORKERS", "3")
    cli.main(["config"])
    assert "API_WORKERS=3" in capsys.readouterr().out


def test_readme_table_is_the_generated_one() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert settings_markdown() in readme, "README.md is stale: paste `dqd config --markdown` into Configuration"
