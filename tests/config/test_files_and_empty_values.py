"""Values that would only fail later, at the first request, are refused when the config is
loaded, naming the key: a CA bundle that cannot be loaded, an empty string where a file or a
password is wanted."""
from __future__ import annotations

import pytest

from scrapoxy_server.config import ConfigError, from_dict
from scrapoxy_server.master.tls import TlsCreators, TlsSetupError


@pytest.mark.parametrize("make_path, reason", [
    (lambda tmp: tmp / "missing.pem", "no such file"),
    (lambda tmp: tmp, "no certificate"),  # a directory
    (lambda tmp: tmp / "notes.txt", "no certificate"),
], ids=["missing", "directory", "not-pem"])
def test_a_ca_file_that_cannot_be_loaded_stops_the_load_naming_key_file_and_reason(
        tmp_path, make_path, reason):
    (tmp_path / "notes.txt").write_text("not a certificate\n", encoding="utf-8")
    path = str(make_path(tmp_path))
    with pytest.raises(ConfigError) as info:
        from_dict({"master": {"ca_file": path}})
    assert info.value.path == "master.ca_file"
    assert repr(path) in info.value.message and reason in info.value.message


def test_a_pem_ca_bundle_loads(lab_ca):
    config = from_dict({"master": {"ca_file": str(lab_ca.ca_file)}})
    assert config.master.ca_file == str(lab_ca.ca_file)


def test_the_master_refuses_to_build_its_tls_with_a_bundle_that_cannot_be_loaded(tmp_path):
    with pytest.raises(TlsSetupError, match="no such file"):
        TlsCreators(verify=True, ca_file=str(tmp_path / "gone.pem"))


@pytest.mark.parametrize("data, path", [
    ({"master": {"ca_file": ""}}, "master.ca_file"),
    ({"commander": {"password": ""}}, "commander.password"),
], ids=["ca_file", "password"])
def test_an_empty_string_is_refused_rather_than_read_as_not_set(data, path):
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    assert info.value.path == path
    assert "must not be empty" in info.value.message


@pytest.mark.parametrize("value, message", [
    ("env:SCRAPOXY_TEST_EMPTY", "environment variable SCRAPOXY_TEST_EMPTY is empty"),
    ("env:", "'env:' needs the name of an environment variable (env:NAME)"),
], ids=["empty-variable", "no-name"])
def test_a_secret_from_the_environment_names_the_variable_that_failed(monkeypatch, value,
                                                                      message):
    monkeypatch.setenv("SCRAPOXY_TEST_EMPTY", "")
    with pytest.raises(ConfigError) as info:
        from_dict({"commander": {"password": value}})
    assert info.value.path == "commander.password"
    assert info.value.message == message
