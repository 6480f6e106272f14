from __future__ import annotations

from pathlib import Path

import pytest

from bridge.settings import DECLARED, SettingsError, load

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("item", DECLARED, ids=lambda d: d.env)
def test_readme_documents_every_setting_as_declared(item):
    default = f"`{item.default}`" if item.default else "(none)"
    assert f"| `{item.env}` | {default} | {item.help} |" in README


def test_defaults_are_the_documented_contract(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # the user's data folder, on Linux
    settings = load({})
    # One database per user, wherever a command runs (not ./data/ under the working folder).
    assert settings.database_url == f"sqlite:///{tmp_path}/loops-bridge/bridge.db"
    assert settings.loops_api_url == "https://app.loops.so/api/v1"
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.endpoint_url("abc") == "http://127.0.0.1:8000/webhooks/abc"


def test_public_url_with_trailing_slash_builds_clean_endpoint_urls():
    settings = load({"BRIDGE_PUBLIC_URL": "https://hooks.example.com/"})
    assert settings.endpoint_url("abc") == "https://hooks.example.com/webhooks/abc"


def test_invalid_value_names_the_variable():
    with pytest.raises(SettingsError, match="BRIDGE_PORT='0' is not valid"):
        load({"BRIDGE_PORT": "0"})


USE = "use sqlite:////path/to/bridge.db or postgresql://user:password@host/database"


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("BRIDGE_LOOPS_RATE_LIMIT", "abc", "'abc' is not valid: must be a positive whole number"),
        ("BRIDGE_LOOPS_RATE_LIMIT", "-3", "'-3' is not valid: must be a positive whole number"),
        ("BRIDGE_LEASE_SECONDS", "nan", "'nan' is not valid: must be a positive number, such"),
        ("BRIDGE_LEASE_SECONDS", "soon", "'soon' is not valid: must be a positive number, such"),
        (
            "BRIDGE_DATABASE_URL",
            "bridge.db",
            f"'bridge.db' is not valid: is not a database URL: {USE}",
        ),
        (
            "BRIDGE_DATABASE_URL",
            "mysql://app:hunter2@db/bridge",
            "'mysql://app:***@db/bridge' is not valid: names mysql, which the bridge does not "
            f"run on: {USE}",
        ),
        (
            "BRIDGE_DATABASE_URL",
            "postgresql+psycopg2://app:hunter2@db/bridge",
            "'postgresql+psycopg2://app:***@db/bridge' is not valid: names "
            "postgresql+psycopg2, which the bridge does not run on",
        ),
    ],
)
def test_a_value_that_cannot_work_is_refused_saying_what_works(variable, value, said):
    with pytest.raises(SettingsError) as refused:
        load({variable: value})
    assert str(refused.value).startswith(f"{variable}={said}")
    assert "hunter2" not in str(refused.value)  # a password in a URL is never repeated


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("postgresql+psycopg2://app:Zq9/hunter2@db/x", "'postgresql+psycopg2://app:***@db/x'"),
        ("postgres:/app:hunter2@db/bridge", "(not shown)"),  # a scheme mistyped
        ("app:hunter2@db:5432/bridge", "(not shown)"),  # no scheme at all
        ("mysql://app:p@hunter2@db/bridge", "(not shown)"),  # an "@" in the password
        ("host=db password=hunter2 dbname=bridge", "(not shown)"),  # libpq's form
        ("postgresql+psycopg2://app@db/x?password=hunter2", "(not shown)"),
        ("postgresql://app:hunter2@db:port/x", "(not shown)"),  # a port that is no number
    ],
)
def test_a_refused_database_url_never_shows_its_password(value, shown):
    with pytest.raises(SettingsError) as refused:
        load({"BRIDGE_DATABASE_URL": value})
    assert str(refused.value).startswith(f"BRIDGE_DATABASE_URL={shown} is not valid: ")
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////var/lib/loops-bridge/bridge.db",
        "postgres://app@db/bridge",
        "postgresql+psycopg://app@db/bridge",
    ],
)
def test_the_database_urls_the_bridge_runs_on_are_taken(url):
    assert load({"BRIDGE_DATABASE_URL": url}).database_url == url


def test_proxies_and_host_names_are_read_as_lists_and_checked_at_start():
    assert (load({}).trusted_proxies, load({}).allowed_hosts) == ("", "")
    settings = load(
        {"BRIDGE_TRUSTED_PROXIES": " 10.0.0.0/8, ::1 ", "BRIDGE_ALLOWED_HOSTS": "Admin.Example.com"}
    )
    assert (settings.trusted_proxies, settings.allowed_hosts) == (
        "10.0.0.0/8,::1",
        "admin.example.com",
    )
    with pytest.raises(SettingsError, match=r"'proxy\.internal' is not an IP address or network"):
        load({"BRIDGE_TRUSTED_PROXIES": "10.0.0.1,proxy.internal"})
    with pytest.raises(SettingsError, match=r"'https://admin\.example\.com' is not a host name"):
        load({"BRIDGE_ALLOWED_HOSTS": "https://admin.example.com"})
