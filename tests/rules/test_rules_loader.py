"""Loading rule packs: the good cases, and every kind of error with its file and line."""

import datetime
import re
from pathlib import Path

import pytest

from toolgate.rules import RuleLoadError, bundled_packs_path, load_rules, load_rules_text

GOOD = """
labels:
  - name: ssn
    level: restricted
    detector: us_ssn
  - name: customer_email
    level: confidential
    paths: ["$..email"]
functions:
  - name: crm.get_customer
    match: {method: GET, path: "/customers/*"}
    owner: crm-team
    sensitivity: confidential
    access:
      - groups: [support]
        reviewed: 2026-10-01
        review_every: 90d
rules:
  - id: mask-restricted
    match: {labels: [ssn], direction: response}
    action: mask
    mask: partial
  - id: deploys-need-approval
    match: {function: "deploy.*"}
    action: approve
    approvers: [sre-leads]
    timeout: 5m
  - id: no-bulk-export
    match: {function: crm.export, when: ["$[?(@.limit > 100)]"]}
    action: block
    message: bulk exports over 100 rows are not allowed
defaults:
  unknown_function: deny
"""


def errors_of(path) -> list:
    with pytest.raises(RuleLoadError) as caught:
        load_rules(path)
    return caught.value.errors


def test_the_spec_example_loads(write_rules):
    ruleset = load_rules(write_rules(GOOD))
    assert [label.name for label in ruleset.labels] == ["ssn", "customer_email"]
    assert ruleset.unknown_function == "deny"
    function = ruleset.functions[0]
    assert function.method == "GET" and function.path.text == "/customers/*"
    grant = function.access[0]
    assert grant.reviewed == datetime.date(2026, 10, 1) and grant.review_every == datetime.timedelta(days=90)
    approve = ruleset.rule("deploys-need-approval")
    assert approve.approvers == ("sre-leads",) and approve.timeout == datetime.timedelta(minutes=5)
    assert ruleset.rule("no-bulk-export").match.when[0].text == "$[?(@.limit > 100)]"
    assert ruleset.rule("mask-restricted").source.line == 18


def test_bundled_packs_load():
    ruleset = load_rules(bundled_packs_path())
    assert {"pii.yaml", "secrets.yaml", "demo.yaml"} <= {Path(f).name for f in ruleset.files}
    assert ruleset.label("ssn") and ruleset.label("aws_access_key")


def test_a_folder_is_loaded_sorted_and_merged(tmp_path):
    (tmp_path / "b.yml").write_text("rules:\n  - {id: second, action: allow}\n")
    (tmp_path / "a.yaml").write_text("labels:\n  - {name: ssn, level: restricted, detector: us_ssn}\n")
    (tmp_path / "c.yaml").write_text("rules:\n  - {id: third, match: {labels: [ssn]}, action: mask, mask: redact}\n")
    (tmp_path / "notes.txt").write_text("not yaml: [")
    ruleset = load_rules(tmp_path)
    assert [Path(f).name for f in ruleset.files] == ["a.yaml", "b.yml", "c.yaml"]
    assert [rule.id for rule in ruleset.rules] == ["second", "third"]


def test_an_empty_file_is_an_empty_rule_set(write_rules):
    assert load_rules(write_rules("# nothing yet\n")).rules == ()


# Each case: YAML, the line the error must point at, and a fragment of the message.
ERRORS = [
    ("rules:\n  - id: r\n    actoin: allow\n", 3, "rule 'r': unknown key 'actoin' (did you mean 'action'?"),
    ("labelz: []\n", 1, "unknown key 'labelz'"),
    ("labels:\n  - name: x\n    level: restricted\n    detector: us_ssn\n    colour: red\n", 5, "label 'x': unknown key 'colour'"),
    ("rules:\n  - id: r\n    match: {function: f, labelz: [x]}\n    action: allow\n", 3, "match: unknown key 'labelz'"),
    ("functions:\n  - name: f\n    match: {method: GET, path: /x, verb: GET}\n", 3, "function 'f': match: unknown key 'verb'"),
    ("functions:\n  - name: f\n    owner: o\n    access:\n      - groups: [a]\n        reviewer: bob\n", 6, "access[0]: unknown key 'reviewer'"),
    ("defaults:\n  unknown_functions: deny\n", 2, "defaults: unknown key 'unknown_functions'"),
    ("rules:\n  - id: r\n    match:\n      when: ['$[?(@.limit > ']\n    action: block\n", 4, "rule 'r': bad JSONPath '$[?(@.limit > ' in match.when"),
    ("labels:\n  - name: x\n    level: internal\n    paths: ['$..']\n", 4, "label 'x': bad JSONPath '$..' in paths"),
    ("rules:\n  - id: r\n    match: {path: '/customers/[0-9'}\n    action: allow\n", 3, "bad glob '/customers/[0-9' in path: unclosed '['"),
    ("rules:\n  - id: r\n    match: {function: 'crm.[]'}\n    action: allow\n", 3, "bad glob 'crm.[]' in function: empty character class"),
    ("functions:\n  - name: f\n    match: {method: GET, path: 'customers/*'}\n", 3, "function 'f': match: bad glob 'customers/*' in path"),
    ("labels:\n  - name: x\n    level: internal\n    detector: passport\n", 4, "label 'x': unknown detector 'passport' (use one of: "),
    ("labels:\n  - {name: x, level: restricted, detector: us_ssn}\nrules:\n  - id: mask-x\n    match: {labels: [x]}\n    action: mask\n    mask: blur\n", 7, "rule 'mask-x': unknown mask style 'blur' (use one of: redact, partial, hash, remove)"),
    ("rules:\n  - id: r\n    action: quarantine\n", 3, "rule 'r': unknown action 'quarantine' (use one of: allow, mask, block, approve)"),
    ("labels:\n  - name: x\n    level: secret\n    detector: email\n", 3, "label 'x': unknown level 'secret' (use one of: public, internal, confidential, restricted)"),
    ("rules:\n  - id: r\n    match: {levels: [top]}\n    action: allow\n", 3, "unknown level 'top'"),
    ("rules:\n  - id: r\n    match: {direction: inbound}\n    action: allow\n", 3, "unknown direction 'inbound' (use one of: request, response)"),
    ("rules:\n  - id: r\n    action: allow\n    mode: dry-run\n", 4, "unknown mode 'dry-run' (use one of: enforce, monitor)"),
    ("rules:\n  - id: r\n    match: {protocol: grpc}\n    action: allow\n", 3, "unknown protocol 'grpc'"),
    ("rules:\n  - id: r\n    match: {method: FETCH}\n    action: allow\n", 3, "unknown method 'FETCH'"),
    ("defaults:\n  unknown_function: maybe\n", 2, "unknown unknown_function value 'maybe' (use one of: allow, deny)"),
    ("rules:\n  - id: r\n    action: allow\n  - id: r\n    action: block\n", 4, "duplicate rule id 'r' (first defined at "),
    ("labels:\n  - {name: x, level: internal, detector: email}\n  - {name: x, level: internal, detector: phone}\n", 3, "duplicate label name 'x'"),
    ("functions:\n  - name: f\n  - name: f\n", 3, "duplicate function name 'f'"),
    ("functions:\n  - name: f\n    owner: o\n    access:\n      - groups: [a]\n        reviewed: 2026-10-01\n        review_every: 90 days\n", 7, "bad duration '90 days' in review_every (use a whole number and a unit: 90d, 12h, 30m, 45s)"),
    ("rules:\n  - id: r\n    action: approve\n    approvers: [x]\n    timeout: soon\n", 5, "bad duration 'soon' in timeout"),
    ("functions:\n  - name: f\n    owner: o\n    access:\n      - groups: [a]\n        reviewed: last week\n        review_every: 90d\n", 6, "'reviewed' must be a date such as 2026-10-01"),
    ("functions:\n  - name: f\n    access:\n      - {groups: [a], reviewed: 2026-10-01, review_every: 90d}\n", 3, "access grants need an owner"),
    ("functions:\n  - name: f\n    owner: o\n    access:\n      - {groups: [a], review_every: 90d}\n", 5, "'reviewed' and 'review_every' go together"),
    ("rules:\n  - id: r\n    match: {labels: [ssn]}\n    action: block\n", 3, "rule 'r': unknown label 'ssn'"),
    ("rules:\n  - id: r\n    action: mask\n", 3, "action mask needs a mask style"),
    ("rules:\n  - id: r\n    action: block\n    mask: redact\n", 4, "'mask' only applies to action: mask"),
    ("rules:\n  - id: r\n    action: approve\n", 3, "action approve needs approvers"),
    ("rules:\n  - id: r\n    action: allow\n    approvers: [x]\n", 4, "'approvers' only applies to action: approve"),
    ("rules:\n  - id: r\n    action: block\n    hold: return\n", 4, "'hold' only applies to action: approve"),
    ("defaults:\n  tool_changes: quarantine\n", 2, "unknown tool_changes value 'quarantine' (use one of: monitor, block, approve)"),
    ("defaults:\n  tool_changes: block\n", 2, "defaults: tool_changes: block needs tool_approvers"),
    ("rules:\n  - id: r\n    action: approve\n    approvers: [x]\n    hold: later\n", 5, "unknown hold mode 'later' (use one of: wait, return)"),
    ("rules:\n  - id: r\n    match: {direction: response}\n    action: approve\n    approvers: [x]\n    hold: return\n", 6, "hold: return answers the caller before the call is made"),
    ("rules:\n  - match: {function: f}\n    action: allow\n", 2, "rule #1: missing 'id'"),
    ("labels:\n  - name: x\n    detector: email\n", 2, "label 'x': missing 'level'"),
    ("labels:\n  - name: x\n    level: internal\n", 2, "needs a detector, paths, or both"),
    ("labels:\n  - name: 'bad name'\n    level: internal\n    detector: email\n", 2, "a label name uses only letters"),
    ("rules:\n  - id: r\n    match: [function, f]\n    action: allow\n", 3, "'match' must be a mapping"),
    ("rules: {id: r}\n", 1, "'rules' must be a list"),
    ("rules:\n  - just-a-string\n", 2, "each entry of 'rules' must be a mapping"),
    ("rules:\n  - id: r\n    match: {groups: [1, 2]}\n    action: allow\n", 3, "'groups' must be a string or a list of strings"),
    ("rules:\n  - id: r\n    id: s\n", 3, "YAML error"),
    ("rules:\n  - id: [unclosed\n", 3, "YAML error"),
    ("- a list\n", 1, "a rule file is a mapping"),
]


@pytest.mark.parametrize("text, line, fragment", ERRORS)
def test_errors_name_file_line_and_fix(write_rules, text, line, fragment):
    path = write_rules(text, "pack.yaml")
    errors = errors_of(path)
    matching = [e for e in errors if fragment in e.message]
    assert matching, f"no error contains {fragment!r}: {[str(e) for e in errors]}"
    error = matching[0]
    assert error.file == str(path)
    assert error.line == line, str(error)
    assert str(error).startswith(f"{path}:{line}: ")


def test_all_errors_are_collected_not_just_the_first(write_rules):
    path = write_rules(
        """
        labels:
          - {name: x, level: secret, detector: us_ssn}
        rules:
          - id: mask-x
            match: {labels: [x], direction: sideways}
            action: mask
            mask: blur
          - id: mask-x
            action: allow
        """
    )
    errors = errors_of(path)
    assert len(errors) == 4  # and no cascade: the label with a bad level still counts as defined
    text = "\n".join(map(str, errors))
    for fragment in ["unknown level 'secret'", "unknown direction 'sideways'", "unknown mask style 'blur'", "duplicate rule id 'mask-x'"]:
        assert fragment in text
    assert all(line.startswith(f"{path}:") for line in str(RuleLoadError(errors)).splitlines()[1:])


def test_duplicates_across_files_name_both_places(tmp_path):
    (tmp_path / "a.yaml").write_text("labels:\n  - {name: ssn, level: restricted, detector: us_ssn}\nrules:\n  - {id: r1, action: allow}\n")
    (tmp_path / "b.yaml").write_text("rules:\n  - {id: other, action: allow}\n  - {id: r1, action: block}\nlabels:\n  - {name: ssn, level: restricted, detector: us_ssn}\n")
    errors = errors_of(tmp_path)
    by_message = {e.message.split(" (")[0]: e for e in errors}
    rule = by_message["duplicate rule id 'r1'"]
    assert rule.file.endswith("b.yaml") and rule.line == 3 and f"{tmp_path / 'a.yaml'}:4" in rule.message
    label = by_message["duplicate label name 'ssn'"]
    assert label.file.endswith("b.yaml") and label.line == 5


def test_conflicting_defaults_across_files(tmp_path):
    (tmp_path / "a.yaml").write_text("defaults: {unknown_function: allow}\n")
    (tmp_path / "b.yaml").write_text("\ndefaults:\n  unknown_function: deny\n")
    [error] = errors_of(tmp_path)
    assert error.file.endswith("b.yaml") and error.line == 3 and "must agree" in error.message


def test_tool_change_defaults_load_and_must_agree_across_files(tmp_path):
    (tmp_path / "a.yaml").write_text("defaults: {tool_changes: block, tool_approvers: [sec]}\n")
    ruleset = load_rules(tmp_path)
    assert (ruleset.tool_changes, ruleset.tool_approvers) == ("block", ("sec",))
    (tmp_path / "b.yaml").write_text("defaults:\n  tool_approvers: [ops]\n")
    [error] = errors_of(tmp_path)
    assert error.file.endswith("b.yaml") and "tool_approvers is 'ops' here but 'sec'" in error.message
    assert load_rules(tmp_path / "a.yaml").tool_changes == "block"
    assert (load_rules(tmp_path / "b.yaml").tool_changes, load_rules(tmp_path / "b.yaml").tool_approvers) == ("monitor", ("ops",))


def test_a_label_used_in_another_file_is_known(tmp_path):
    (tmp_path / "a.yaml").write_text("rules:\n  - {id: r, match: {labels: [ssn]}, action: mask, mask: redact}\n")
    (tmp_path / "b.yaml").write_text("labels:\n  - {name: ssn, level: restricted, detector: us_ssn}\n")
    assert load_rules(tmp_path).rule("r").match.labels == ("ssn",)


def test_missing_path_and_empty_folder(tmp_path):
    [error] = errors_of(tmp_path / "nope.yaml")
    assert "no such file" in error.message
    [error] = errors_of(tmp_path)
    assert "no rule files" in error.message


def test_load_rules_text_names_the_source():
    with pytest.raises(RuleLoadError) as caught:
        load_rules_text("rules:\n  - {id: r, action: nope}\n", name="inline.yaml")
    assert re.match(r"inline\.yaml:2: rule 'r': unknown action 'nope'", str(caught.value.errors[0]))


def test_jsonpath_is_compiled_once_at_load(write_rules):
    ruleset = load_rules(write_rules(GOOD))
    label = ruleset.label("customer_email")
    assert label.paths[0].descendant_keys == frozenset({"email"})
    condition = ruleset.rule("no-bulk-export").match.when[0]
    assert condition.first_match({"limit": 500}) == "$.limit"
    assert condition.first_match({"limit": 5}) is None


def test_an_approve_rule_without_direction_holds_requests_only(write_rules):
    ruleset = load_rules(write_rules(GOOD))
    assert ruleset.rule("deploys-need-approval").match.direction == "request"  # spec's example
    assert ruleset.rule("no-bulk-export").match.direction is None  # other actions: both ways
    answers = load_rules_text(
        "rules:\n"
        "  - {id: release, match: {function: f, direction: response}, action: approve, approvers: [x]}\n"
        "  - {id: watch, match: {function: f}, action: approve, approvers: [x], mode: monitor}\n"
    )
    assert answers.rule("release").match.direction == "response"
    assert answers.rule("watch").match.direction == "request"
