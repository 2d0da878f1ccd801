"""Settings: every tunable comes from crm/config.py, parsed once at startup."""

import pytest

from crm.config import SettingsError, load_settings


def test_tunables_have_their_documented_defaults(monkeypatch, tmp_path):
    for name in ("MAIL_MAX_ATTEMPTS", "NEWSLETTER_BATCH_SIZE", "SUBSCRIBE_MIN_FILL_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(tmp_path)
    assert settings["MAIL_MAX_ATTEMPTS"] == 8
    assert settings["NEWSLETTER_BATCH_SIZE"] == 1000
    assert settings["SUBSCRIBE_MIN_FILL_SECONDS"] == 2.0


def test_numbers_from_the_environment_are_parsed_to_the_defaults_type(monkeypatch, tmp_path):
    monkeypatch.setenv("NEWSLETTER_BATCH_SIZE", " 500 ")
    monkeypatch.setenv("MAIL_RETRY_BASE_SECONDS", "0.5")
    monkeypatch.setenv("SENDGRID_TIMEOUT_SECONDS", "")  # empty means the default
    settings = load_settings(tmp_path)
    assert settings["NEWSLETTER_BATCH_SIZE"] == 500
    assert isinstance(settings["NEWSLETTER_BATCH_SIZE"], int)
    assert settings["MAIL_RETRY_BASE_SECONDS"] == 0.5
    assert settings["SENDGRID_TIMEOUT_SECONDS"] == 10.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NEWSLETTER_BATCH_SIZE", "many"),
        ("NEWSLETTER_MAX_ATTEMPTS", "2.5"),
        ("MAIL_RETRY_MAX_SECONDS", "nan"),
        ("WORKER_HOOK_SECONDS", "-1"),
        ("NEWSLETTER_RATE_PER_MINUTE", "30 000"),
    ],
)
def test_an_invalid_number_stops_startup_naming_the_setting(monkeypatch, tmp_path, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as error:
        load_settings(tmp_path)
    assert name in str(error.value)
    assert repr(value) in str(error.value)


def test_code_reads_tunables_from_the_app_config(app, app_ctx, monkeypatch):
    from crm.newsletters.settings import batch_size

    monkeypatch.setitem(app.config, "NEWSLETTER_BATCH_SIZE", 7)
    assert batch_size() == 7
