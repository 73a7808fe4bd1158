import pytest

from toolgate.rules.globs import GlobError, compile_glob


@pytest.mark.parametrize(
    "glob, kind, value, expected",
    [
        ("deploy.*", "name", "deploy.start", True),
        ("deploy.*", "name", "deployx", False),
        ("crm.export", "name", "crm.export", True),
        ("crm.export", "name", "crm.exports", False),
        ("/customers/*", "path", "/customers/42", True),
        ("/customers/*", "path", "/customers/42/orders", False),
        ("/customers/**", "path", "/customers/42/orders", True),
        ("/customers/[0-9]*", "path", "/customers/42", True),
        ("/customers/[!0-9]*", "path", "/customers/42", False),
        ("*.internal", "host", "CRM.Internal", True),
    ],
)
def test_glob_matching(glob, kind, value, expected):
    assert compile_glob(glob, kind).matches(value) is expected


def test_literal_prefix_feeds_the_index():
    assert compile_glob("crm.*").literal_prefix == "crm."
    assert compile_glob("crm.export").is_literal


@pytest.mark.parametrize(
    "glob, kind, fragment",
    [("/customers/[0-9", "path", "unclosed"), ("a[]b", "name", "empty"), ("", "name", "non-empty"), ("a***", "name", "***"), ("customers/*", "path", "starts with '/'"), ("a]b", "name", "without")],
)
def test_bad_globs(glob, kind, fragment):
    with pytest.raises(GlobError, match=fragment.replace("*", r"\*").replace("[", r"\[")):
        compile_glob(glob, kind)
