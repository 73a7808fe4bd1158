import jwt
from click.testing import CliRunner

from toolgate.addons.identity.oidc import KeySet, TokenPolicy, verify_token
from toolgate.scripts.cli import cli
from toolgate.scripts.dev_issuer import DevKeys


def test_dev_token_mints_a_token_the_issuer_keys_verify(tmp_path):
    keys = DevKeys.generate("http://127.0.0.1:9", "toolgate-demo")
    keys.save(tmp_path / "k.json")
    result = CliRunner().invoke(cli, ["dev", "token", "--sub", "alice", "--groups", "sre, support",
                                      "--alg", "ES256", "--keys", str(tmp_path / "k.json")])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    identity, _ = verify_token(token, KeySet(keys.jwks()),
                               TokenPolicy(issuer=keys.issuer, audience="toolgate-demo"))
    assert identity.subject == "alice" and identity.groups == ("sre", "support")


def test_dev_token_without_keys_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["dev", "token", "--sub", "a", "--keys", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "start the dev issuer" in result.output


def test_key_file_is_private(tmp_path):
    DevKeys.generate("http://x", "a").save(tmp_path / "k.json")
    assert (tmp_path / "k.json").stat().st_mode & 0o077 == 0
