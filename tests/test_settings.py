"""Settings from ``CARESHARE_*`` variables, and identifiers that sort by creation."""

from __future__ import annotations

import stat
import time
from typing import TYPE_CHECKING

import pytest

from careshare.core.ids import new_id
from careshare.core.settings import DEFAULT_MAX_UPLOAD_BYTES, SECRET_FILE, Settings

if TYPE_CHECKING:
    from pathlib import Path


def test_defaults_live_in_careshare_data_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    data_dir = tmp_path / "careshare-data"
    assert settings.data_dir == data_dir
    assert data_dir.is_dir()
    assert settings.database_url == f"sqlite+aiosqlite:///{data_dir / 'careshare.db'}"
    assert settings.storage_url == (data_dir / "blobs").as_uri()
    assert settings.storage_url.startswith("file:///")
    assert settings.max_upload_bytes == DEFAULT_MAX_UPLOAD_BYTES == 1024**3
    assert settings.disabled_plugins == frozenset()
    assert settings.secret_key


def test_an_empty_variable_means_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env(
        {
            "CARESHARE_DATA_DIR": "",
            "CARESHARE_DATABASE_URL": "",
            "CARESHARE_STORAGE_URL": "",
            "CARESHARE_MAX_UPLOAD_BYTES": "",
            "CARESHARE_DISABLE_PLUGINS": "",
        }
    )
    assert settings.data_dir == tmp_path / "careshare-data"
    assert settings.max_upload_bytes == DEFAULT_MAX_UPLOAD_BYTES


def test_a_relative_data_dir_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"CARESHARE_DATA_DIR": "nested/data"})
    assert settings.data_dir == tmp_path / "nested" / "data"
    assert settings.data_dir.is_absolute() and settings.data_dir.is_dir()


def test_os_environ_is_read_when_no_mapping_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARESHARE_DATA_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("CARESHARE_MAX_UPLOAD_BYTES", "4096")
    monkeypatch.delenv("CARESHARE_SECRET_KEY", raising=False)
    settings = Settings.from_env()
    assert settings.data_dir == tmp_path / "from-env"
    assert settings.max_upload_bytes == 4096


def test_the_secret_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    env = {"CARESHARE_DATA_DIR": str(tmp_path / "data")}
    first = Settings.from_env(env)
    kept = tmp_path / "data" / SECRET_FILE
    assert kept.read_text().strip() == first.secret_key
    assert len(first.secret_key) >= 32
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert Settings.from_env(env).secret_key == first.secret_key


def test_each_data_dir_gets_its_own_secret(tmp_path: Path) -> None:
    one = Settings.from_env({"CARESHARE_DATA_DIR": str(tmp_path / "one")})
    two = Settings.from_env({"CARESHARE_DATA_DIR": str(tmp_path / "two")})
    assert one.secret_key != two.secret_key


def test_a_secret_key_from_the_environment_is_used_and_not_written(tmp_path: Path) -> None:
    env = {"CARESHARE_DATA_DIR": str(tmp_path), "CARESHARE_SECRET_KEY": "from-the-environment-0123456789abcdef"}
    assert Settings.from_env(env).secret_key == "from-the-environment-0123456789abcdef"
    assert not (tmp_path / SECRET_FILE).exists()


def test_environment_overrides(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "CARESHARE_DATA_DIR": str(tmp_path / "d"),
            "CARESHARE_DATABASE_URL": "postgresql+asyncpg://u@db.example/careshare",
            "CARESHARE_STORAGE_URL": "s3://bucket/prefix",
            "CARESHARE_SECRET_KEY": "k" * 40,
            "CARESHARE_MAX_UPLOAD_BYTES": "1048576",
        }
    )
    assert settings.data_dir == tmp_path / "d"
    assert settings.database_url == "postgresql+asyncpg://u@db.example/careshare"
    assert settings.storage_url == "s3://bucket/prefix"
    assert settings.secret_key == "k" * 40
    assert settings.max_upload_bytes == 1048576


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("consents", {"consents"}),
        ("consents,chat", {"consents", "chat"}),
        (" consents , chat ,, ", {"consents", "chat"}),
        (",", set()),
        ("pdf,pdf", {"pdf"}),
    ],
)
def test_disabled_plugins_parsing(tmp_path: Path, value: str, expected: set[str]) -> None:
    settings = Settings.from_env({"CARESHARE_DATA_DIR": str(tmp_path), "CARESHARE_DISABLE_PLUGINS": value})
    assert settings.disabled_plugins == frozenset(expected)


@pytest.mark.parametrize("value", ["0", "-1", "lots", "1.5", "1GiB"])
def test_an_invalid_max_upload_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValueError):
        Settings.from_env({"CARESHARE_DATA_DIR": str(tmp_path), "CARESHARE_MAX_UPLOAD_BYTES": value})


def test_settings_are_frozen(tmp_path: Path) -> None:
    import attrs

    settings = Settings.from_env({"CARESHARE_DATA_DIR": str(tmp_path)})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        settings.max_upload_bytes = 1  # type: ignore[misc]


# -- ids -------------------------------------------------------------------------------------------

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def _milliseconds(identifier: str) -> int:
    """The creation time a ULID carries in its first 10 characters (48 bits)."""
    value = 0
    for char in identifier[:10]:
        value = value * 32 + _CROCKFORD.index(char)
    return value


def test_new_id_is_26_lower_case_crockford_characters() -> None:
    for _ in range(200):
        identifier = new_id()
        assert len(identifier) == 26
        assert set(identifier) <= set(_CROCKFORD)


def test_new_id_is_unique() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)


def test_new_id_starts_with_the_creation_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    identifier = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= _milliseconds(identifier) <= after


def test_ids_made_in_later_milliseconds_sort_later() -> None:
    ids = []
    for _ in range(30):
        ids.append(new_id())
        made = time.time_ns() // 1_000_000
        while time.time_ns() // 1_000_000 == made:  # wait for the next millisecond
            time.sleep(0.0002)
    assert ids == sorted(ids)
    assert len({_milliseconds(identifier) for identifier in ids}) == len(ids)
