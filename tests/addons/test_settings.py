import pytest

from toolgate.addons import settings


@pytest.mark.parametrize("text, size", [("10MiB", 10 * 1024**2), ("512k", 512 * 1024),
                                        ("1048576", 1048576), ("2 GB", 2 * 1024**3), ("7b", 7)])
def test_sizes(text, size):
    assert settings.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1", "0", "10 parsecs", "1.5m"])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        settings.parse_size(text)


@pytest.mark.parametrize("text, expected", [("127.0.0.1:8090", ("127.0.0.1", 8090)),
                                            ("[::1]:0", ("::1", 0)),
                                            ("localhost:1", ("localhost", 1))])
def test_listen(text, expected):
    assert settings.parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8090", ":8090", "host:", "host:99999", "host:http"])
def test_bad_listen(text):
    with pytest.raises(ValueError):
        settings.parse_listen(text)


def test_secret_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TG_TEST_SECRET", "s3cr3t")
    assert settings.resolve_secret("env:TG_TEST_SECRET", "k") == b"s3cr3t"
    path = tmp_path / "key"
    path.write_bytes(b"from-file\n")
    assert settings.resolve_secret(f"file:{path}", "k") == b"from-file"


@pytest.mark.parametrize("ref, message", [("plain", "env:NAME or file:PATH"),
                                          ("env:TG_TEST_UNSET_VAR", "not set"),
                                          ("file:/no/such/file", "cannot read"),
                                          ("vault:x", "env:NAME or file:PATH")])
def test_bad_secrets_say_what_to_fix_without_the_value(ref, message, monkeypatch):
    monkeypatch.delenv("TG_TEST_UNSET_VAR", raising=False)
    with pytest.raises(ValueError, match=message):
        settings.resolve_secret(ref, "toolgate_mask_key")


def test_empty_secret_is_refused(monkeypatch):
    monkeypatch.setenv("TG_TEST_EMPTY", "")
    with pytest.raises(ValueError, match="empty"):
        settings.resolve_secret("env:TG_TEST_EMPTY", "k")


def test_choices():
    assert settings.check_choice("m", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match="one of a, b"):
        settings.check_choice("m", "c", ("a", "b"))


def test_the_default_mask_key_is_created_once_private_and_kept(tmp_path):
    path = settings.default_mask_key_file(tmp_path / "toolgate.duckdb")
    assert path.name == "toolgate.duckdb.key"
    key = settings.load_or_create_key(path)
    assert len(key) == 64 and path.stat().st_mode & 0o077 == 0
    assert settings.load_or_create_key(path) == key
