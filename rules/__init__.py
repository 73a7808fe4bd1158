"""toolgate's rule engine: a pure library over Python values (no mitmproxy), shared by the proxy
addons and the command line.

    ruleset = load_rules("rules/packs")                       # or bundled_packs_path()
    decision = evaluate(ruleset, Call(direction="request", method="GET",
                                      path="/customers/42", subject="ana", groups=("support",),
                                      body=None), mask_key)
    decision.action, decision.body, decision.findings, decision.explain()
"""

from toolgate.rules.bodies import encode_form, parse_form, parse_query, rest_arguments
from toolgate.rules.classify import Classifier
from toolgate.rules.decision import Call, Decision, Finding, Findings, RuleMatch
from toolgate.rules.detectors import DETECTORS, Detector
from toolgate.rules.durations import format_duration, parse_duration
from toolgate.rules.engine import evaluate
from toolgate.rules.errors import RuleError, RuleLoadError
from toolgate.rules.loader import bundled_packs_path, load_rules, load_rules_text
from toolgate.rules.masking import candidate_fingerprints, fingerprint, hash_token
from toolgate.rules.model import ACTIONS, LEVELS, MASK_STYLES, Access, CatalogFunction, Label, Rule, RuleSet

__all__ = [
    "ACTIONS", "DETECTORS", "LEVELS", "MASK_STYLES",
    "Access", "Call", "CatalogFunction", "Classifier", "Decision", "Detector", "Finding", "Label",
    "Rule", "RuleError", "RuleLoadError", "RuleMatch", "RuleSet",
    "bundled_packs_path", "candidate_fingerprints", "encode_form", "evaluate", "fingerprint",
    "format_duration", "hash_token", "load_rules", "load_rules_text", "parse_duration",
    "parse_form", "parse_query", "rest_arguments",
]  # fmt: skip
