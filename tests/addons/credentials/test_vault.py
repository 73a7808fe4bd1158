"""The credentials file on its own: templates, strict validation with file:line, matching."""

import textwrap

import pytest

from toolgate.addons.credentials.vault import (
    CallFacts,
    Reference,
    TemplateError,
    VaultError,
    load_vault,
    load_vault_text,
    parse_template,
    resolve_template,
)

SECRET = "crm-secret-7f3a9c1e2b"


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("CRM_TOKEN", SECRET)
    monkeypatch.delenv("TOOLGATE_TEST_MISSING", raising=False)
    return monkeypatch


def vault_text(text: str, **kwargs):
    return load_vault_text(textwrap.dedent(text), "creds.yaml", **kwargs)


def errors(text: str, **kwargs) -> list[str]:
    with pytest.raises(VaultError) as caught:
        vault_text(text, **kwargs)
    return [str(e) for e in caught.value.errors]


# -- templates -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, parts", [
    ("plain", ("plain",)),
    ("Bearer ${env:CRM_TOKEN}", ("Bearer ", Reference("env", "CRM_TOKEN"))),
    ("${env:A}${env:B}", (Reference("env", "A"), Reference("env", "B"))),
    ("${file:/run/s}", (Reference("file", "/run/s"),)),
    ("cost $$5 and $ alone", ("cost $5 and $ alone",)),
    ("$${env:X}", ("${env:X}",)),
])
def test_templates_parse(text, parts):
    assert parse_template(text) == parts


def test_a_relative_file_is_relative_to_the_credentials_file(tmp_path):
    assert parse_template("${file:secrets/crm}", tmp_path) == (Reference("file", str(tmp_path / "secrets/crm")),)


@pytest.mark.parametrize("text, message", [
    ("Bearer ${env:CRM_TOKEN", "without a closing"),
    ("${vault:crm}", "unknown reference ${vault:crm}"),
    ("${CRM_TOKEN}", "unknown reference"),
    ("${env:}", "not an environment variable name"),
    ("${env:1X}", "not an environment variable name"),
    ("${file:}", "the path is empty"),
])
def test_bad_templates_say_what_to_fix(text, message):
    with pytest.raises(TemplateError, match=message.replace("$", r"\$").replace("{", r"\{")):
        parse_template(text)


def test_resolution_from_the_environment_and_files(env, tmp_path):
    secret_file = tmp_path / "key"
    secret_file.write_text("file-secret-0a1b2c3d\n")
    value, secrets = resolve_template(parse_template("A ${env:CRM_TOKEN} B ${file:key}", tmp_path), "x")
    assert value == f"A {SECRET} B file-secret-0a1b2c3d"
    assert secrets == (SECRET, "file-secret-0a1b2c3d")


@pytest.mark.parametrize("template, setup, message", [
    ("${env:TOOLGATE_TEST_MISSING}", {}, "TOOLGATE_TEST_MISSING is not set"),
    ("${env:SHORT}", {"SHORT": "abc"}, "shorter than 8"),
    ("${env:EMPTY}", {"EMPTY": ""}, "is empty"),
    ("${env:CRLF}", {"CRLF": "long-enough\r\nX-Evil: 1"}, "line break"),
    ("${file:/no/such/secret}", {}, "cannot read /no/such/secret"),
])
def test_resolution_errors_name_what_is_missing_never_a_value(env, template, setup, message):
    for name, value in setup.items():
        env.setenv(name, value)
    with pytest.raises(ValueError) as caught:
        resolve_template(parse_template(template), "target #1")
    assert message in str(caught.value) and str(caught.value).startswith("target #1: ")
    for value in setup.values():
        if value:
            assert value not in str(caught.value)


# -- the file --------------------------------------------------------------------------------------

def test_the_spec_example_loads(env):
    vault = vault_text("""\
        targets:
          - match: {host: crm.internal}
            headers:
              Authorization: "Bearer ${env:CRM_TOKEN}"
          - match: {function: "github.*"}
            pass_caller_token: true
        """)
    crm, github = vault.targets
    assert crm.headers == (("Authorization", f"Bearer {SECRET}"),)
    assert crm.secret_headers == ("Authorization",) and crm.secrets == (SECRET,)
    assert crm.label == "target #1 (host crm.internal)"
    assert github.pass_caller_token and not github.headers
    assert SECRET not in repr(vault)  # a logged vault shows no value


def test_query_parameters_and_plain_headers(env):
    (target,) = vault_text("""\
        targets:
          - name: crm
            match: {host: "*.internal", path: /customers/**, method: [get, post]}
            headers: {X-Tenant: acme}
            query: {api_key: "${env:CRM_TOKEN}"}
        """).targets
    assert target.label == "target 'crm'"
    assert target.headers == (("X-Tenant", "acme"),) and target.secret_headers == ()
    assert target.query == (("api_key", SECRET),) and target.secret_query == ("api_key",)


def test_a_missing_variable_names_the_target_and_line(env):
    (message,) = errors("""\
        targets:
          - match: {host: crm.internal}
            headers:
              Authorization: "Bearer ${env:TOOLGATE_TEST_MISSING}"
        """)
    assert message.startswith("creds.yaml:4: target #1 (host crm.internal): header Authorization: "
                              "${env:TOOLGATE_TEST_MISSING}")
    assert "TOOLGATE_TEST_MISSING is not set" in message


@pytest.mark.parametrize("text, expected", [
    ("targets: {}\n", "creds.yaml:1: 'targets' must be a list"),
    ("targets: []\nextra: 1\n", "creds.yaml:2: the top level: unknown key 'extra'"),
    ("- 1\n", "creds.yaml:1: a credentials file is a mapping"),
    ("targets: [\n", "creds.yaml:2: YAML error"),
    ("targets:\n  - 3\n", "creds.yaml:2: target #1 must be a mapping"),
    ("targets:\n  - match: {host: a}\n    header: {X: y}\n",
     "creds.yaml:3: target #1 (host a): unknown key 'header' (did you mean 'headers'?)"),
    ("targets:\n  - headers: {X-A: \"${env:CRM_TOKEN}\"}\n", "creds.yaml:2: target #1: missing 'match'"),
    ("targets:\n  - match: {host: a}\n", "creds.yaml:2: target #1 (host a): needs headers, query or pass_caller_token"),
    ("targets:\n  - match: {host: a}\n    pass_caller_token: false\n", "needs headers, query or pass_caller_token"),
    ("targets:\n  - match: {host: a}\n    pass_caller_token: yes please\n", "creds.yaml:3: target #1 (host a): pass_caller_token is true or false"),
    ("targets:\n  - match: {host: a, labels: [ssn]}\n    pass_caller_token: true\n",
     "creds.yaml:2: target #1 (host a, labels ssn): match: 'labels' is about values in a body"),
    ("targets:\n  - match: {hots: a}\n    pass_caller_token: true\n",
     "creds.yaml:2: target #1 (hots a): match: unknown key 'hots' (did you mean 'host'?)"),
    ("targets:\n  - match: {path: customers}\n    pass_caller_token: true\n", "bad glob 'customers' in path"),
    ("targets:\n  - match: {protocol: grpc}\n    pass_caller_token: true\n", "unknown protocol 'grpc'"),
    ("targets:\n  - match: {method: FETCH}\n    pass_caller_token: true\n", "unknown method 'FETCH'"),
    ("targets:\n  - match: {host: a}\n    headers: {Host: \"${env:CRM_TOKEN}\"}\n",
     "creds.yaml:3: target #1 (host a): header Host: the gateway does not let a credential replace this header"),
    ("targets:\n  - match: {host: a}\n    headers: {\"Bad Name\": x}\n", "not a valid header name"),
    ("targets:\n  - match: {host: a}\n    headers: {X-N: 5}\n", "the value must be a string"),
    ("targets:\n  - match: {host: a}\n    headers: [x]\n", "'headers' must be a mapping"),
    ("targets:\n  - match: {host: a}\n    headers:\n      X-A: \"${env:CRM_TOKEN\"\n",
     "creds.yaml:4: target #1 (host a): header X-A: '${' without a closing '}'"),
    ("targets:\n  - match: {host: a}\n    pass_caller_token: true\n    headers: {authorization: \"${env:CRM_TOKEN}\"}\n",
     "pass_caller_token already sets Authorization"),
    ("targets:\n  - name: a\n    match: {}\n    pass_caller_token: true\n  - name: a\n    match: {}\n    pass_caller_token: true\n",
     "creds.yaml:5: duplicate target name 'a'"),
])
def test_strict_validation_with_file_and_line(env, text, expected):
    assert any(expected in message for message in errors(text)), errors(text)


def test_every_problem_is_reported_at_once(env):
    assert len(errors("""\
        targets:
          - match: {hots: a}
            pass_caller_token: true
          - match: {host: b}
            headers: {X-A: "${env:TOOLGATE_TEST_MISSING}"}
        """)) == 2


def test_load_vault_lists_the_secret_files_it_reads(tmp_path):
    (tmp_path / "crm.key").write_text(SECRET + "\n")
    path = tmp_path / "creds.yaml"
    path.write_text('targets:\n  - match: {}\n    headers: {X-Key: "${file:crm.key}"}\n')
    vault = load_vault(path)
    assert vault.targets[0].headers == (("X-Key", SECRET),)
    assert vault.files == (path, tmp_path / "crm.key")


# -- matching --------------------------------------------------------------------------------------

MATCHING = """\
targets:
  - name: support-crm
    match: {host: crm.internal, groups: [support], path: /customers/*}
    pass_caller_token: true
  - name: crm
    match: {host: crm.internal}
    headers: {Authorization: "Bearer ${env:CRM_TOKEN}"}
  - name: github
    match: {function: "github.*", protocol: mcp, not_groups: [contractors]}
    pass_caller_token: true
  - name: deploys
    match: {method: POST, path: /deploy, subjects: ["ci-*"]}
    headers: {X-Deploy-Key: "${env:CRM_TOKEN}"}
"""


@pytest.mark.parametrize("facts, expected", [
    (CallFacts(host="crm.internal", path="/customers/42?x=1", groups=("support",)), "support-crm"),
    (CallFacts(host="CRM.internal", path="/customers/42/orders", groups=("support",)), "crm"),
    (CallFacts(host="crm.internal", path="/customers/42", groups=("sales",)), "crm"),
    (CallFacts(host="mcp.internal", function="github.create_issue", protocol="mcp"), "github"),
    (CallFacts(host="mcp.internal", function="github.create_issue", protocol="openai"), None),
    (CallFacts(function="github.x", protocol="mcp", groups=("contractors",)), None),
    (CallFacts(method="post", path="/deploy", subject="ci-runner"), "deploys"),
    (CallFacts(method="GET", path="/deploy", subject="ci-runner"), None),
    (CallFacts(method="POST", path="/deploy", subject="alice"), None),
    (CallFacts(), None),
])
def test_the_first_matching_target_is_used(env, facts, expected):
    target = vault_text(MATCHING).select(facts)
    assert (target.label.split("'")[1] if target else None) == expected


def test_an_empty_match_matches_every_call(env):
    vault = vault_text('targets:\n  - match: {}\n    headers: {X-Key: "${env:CRM_TOKEN}"}\n')
    assert vault.select(CallFacts()) is vault.targets[0]


# -- targets and rules select calls by one implementation -----------------------------------

AGREEMENT_MATCHES = [
    "{}",
    "{host: crm.internal}",
    "{host: '*.internal'}",
    "{host: CRM.Internal}",
    "{path: /customers/*}",
    "{path: '/customers/**'}",
    "{path: '/v1/*/orders'}",
    "{path: '*'}",
    "{method: [get, PUT]}",
    "{function: 'github.*'}",
    "{function: [deploy, 'crm.get_*']}",
    "{protocol: mcp}",
    "{protocol: [rest, openai]}",
    "{groups: [sre, support]}",
    "{not_groups: [contractors]}",
    "{groups: [support], not_groups: [contractors]}",
    "{subjects: ['svc-*']}",
    "{host: crm.internal, path: /customers/*, method: GET, groups: [support]}",
]
AGREEMENT_CALLS = [
    dict(host="crm.internal", method="GET", path="/customers/42", function="crm.get_customer",
         protocol="rest", subject="alice", groups=("support",)),
    dict(host="CRM.internal", method="get", path="/customers/42?x=1", function="crm.get_customer",
         protocol="rest", subject="alice", groups=("support", "contractors")),
    dict(host="maps.internal", method="PUT", path="/customers/42/orders", function="github.push",
         protocol="mcp", subject="svc-ci", groups=("sre",)),
    dict(host="api.example", method="POST", path="/v1/7/orders", function="deploy",
         protocol="openai", subject=None, groups=()),
    dict(host="crm.internal.evil", method="DELETE", path="", function="deployx",
         protocol="anthropic", subject="svc", groups=("contractors",)),
    dict(host="x.internal", method="GET", path="/", function="github", protocol="rest",
         subject="bob", groups=("sre", "support")),
]


@pytest.mark.parametrize("match", AGREEMENT_MATCHES)
def test_a_target_and_a_rule_with_the_same_match_select_the_same_calls(env, match):
    from toolgate.rules import Call, evaluate, load_rules_text

    vault = vault_text(f"targets:\n  - match: {match}\n    pass_caller_token: true\n")
    ruleset = load_rules_text(f"rules:\n  - id: r\n    match: {match}\n    action: block\n")
    selected, ruled = [], []
    for call in AGREEMENT_CALLS:
        selected.append(vault.select(CallFacts(**call)) is not None)
        decision = evaluate(ruleset, Call(direction="request", body=None, **call), b"k" * 32)
        ruled.append(decision.action == "block")
    assert selected == ruled
    assert match != "{}" or all(selected)
