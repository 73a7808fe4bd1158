"""The credentials file: which call gets which backend credential, resolved from the
environment or from files. Pure: no mitmproxy here, so it is tested on its own.

    targets:
      - match: {host: crm.internal}            # the rule format's match keys about the call
        headers:
          Authorization: "Bearer ${env:CRM_TOKEN}"
        query:
          api_key: "${file:/run/secrets/crm}"  # a relative path is relative to this file
      - match: {function: "github.*"}
        pass_caller_token: true

The first target that matches a call is used. A value is a template: `${env:NAME}` and
`${file:PATH}` are replaced by the secret (a file's trailing newline dropped), `$$` is a `$`.
Every problem is reported as `file:line: target ...: what is wrong`, and a vault is only
returned when there are none: a missing secret never becomes an empty header upstream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from toolgate.addons import settings
from toolgate.rules.callmatch import bare_path, call_matches
from toolgate.rules.errors import RuleError
from toolgate.rules.loader import _line, _Loader, _suggest
from toolgate.rules.model import Match

TOP_KEYS = ("targets",)
TARGET_KEYS = ("name", "match", "headers", "query", "pass_caller_token", "description")
# The rule format's match keys that describe the call itself. The others (direction, labels,
# levels, when) are about values in a body, which a credential cannot depend on: it is chosen
# once per call, before the request leaves.
MATCH_KEYS = ("function", "protocol", "host", "method", "path", "groups", "not_groups", "subjects")
DATA_KEYS = ("direction", "labels", "levels", "when")
# Headers a credential must not replace: framing, routing, and the gateway's own.
RESERVED_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "upgrade",
    "proxy-connection", "proxy-authorization", "x-toolgate-call-id",
})  # fmt: skip
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
REFERENCE = re.compile(r"\$\$|\$\{([^{}]*)\}|\$\{")
# A secret shorter than this cannot be masked in answers without mangling them, nor reliably.
MIN_SECRET = 8


class VaultError(Exception):
    """A credentials file that does not load; carries every problem, each with file and line."""

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = list(errors)
        count = len(self.errors)
        super().__init__(f"{count} error{'s' if count != 1 else ''} in credentials:\n"
                         + "\n".join(map(str, self.errors)))


class TemplateError(ValueError):
    """A header or query value that is not a valid template."""


@dataclass(frozen=True)
class Reference:
    kind: str  # "env" | "file"
    name: str  # the variable, or the file's path (made absolute)

    def __str__(self) -> str:
        return f"${{{self.kind}:{self.name}}}"


Template = tuple["str | Reference", ...]


def parse_template(text: str, base: Path | None = None) -> Template:
    """`"Bearer ${env:T}"` -> `("Bearer ", Reference("env", "T"))`; TemplateError says what to
    fix. A relative `${file:...}` is taken relative to `base`."""
    parts: list[str | Reference] = []
    literal, position = "", 0
    for found in REFERENCE.finditer(text):
        literal += text[position:found.start()]
        position = found.end()
        if found.group(0) == "$$":
            literal += "$"
            continue
        if found.group(1) is None:
            raise TemplateError(f"'${{' without a closing '}}' in {text!r} (write $$ for a literal $)")
        kind, sep, name = found.group(1).partition(":")
        if not sep or kind not in ("env", "file"):
            raise TemplateError(f"unknown reference ${{{found.group(1)}}} (use ${{env:NAME}} or ${{file:PATH}})")
        if kind == "env" and not ENV_NAME.fullmatch(name):
            raise TemplateError(f"${{env:{name}}}: not an environment variable name")
        if kind == "file":
            if not name.strip():
                raise TemplateError("${file:}: the path is empty")
            path = Path(name).expanduser()
            name = str(path if path.is_absolute() or base is None else base / path)
        if literal:
            parts.append(literal)
            literal = ""
        parts.append(Reference(kind, name))
    literal += text[position:]
    if literal:
        parts.append(literal)
    return tuple(parts)


def resolve_template(template: Template, what: str) -> tuple[str, tuple[str, ...]]:
    """The value and the secrets in it; ValueError (never holding a secret) if one is missing,
    empty, too short or not a valid header value."""
    value, secrets = [], []
    for part in template:
        if isinstance(part, str):
            value.append(part)
            continue
        where = f"{what}: {part}"
        data = settings.resolve_secret(f"{part.kind}:{part.name}", where)
        try:
            secret = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{where} is not UTF-8 text") from None
        if any(char in secret for char in "\r\n\0"):
            raise ValueError(f"{where} holds a line break or NUL, which a header cannot carry")
        if len(secret.strip()) < MIN_SECRET:
            raise ValueError(f"{where} is shorter than {MIN_SECRET} characters: too short to be "
                             "masked reliably in answers")
        value.append(secret)
        secrets.append(secret)
    return "".join(value), tuple(secrets)


@dataclass(frozen=True)
class CallFacts:
    """What a credential is chosen by: the call as the policy saw it, and its caller."""

    host: str | None = None
    method: str | None = None
    path: str | None = None
    function: str | None = None
    protocol: str | None = None
    subject: str | None = None
    groups: tuple[str, ...] = ()


def matches(match: Match, call: CallFacts) -> bool:
    """The rule engine's semantics for the match keys about the call, by the engine's own
    implementation (rules/callmatch.py)."""
    return call_matches(match, function=call.function, protocol=call.protocol, host=call.host,
                        method=call.method, path=bare_path(call.path), subject=call.subject,
                        groups=call.groups)


@dataclass(frozen=True)
class Target:
    """One resolved target. Its values are secrets: they stay out of its repr."""

    label: str  # how messages and logs name it: "target 'crm'", "target #1 (host crm.internal)"
    match: Match
    pass_caller_token: bool = False
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    query: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # Names of the headers and query parameters whose values hold a secret.
    secret_headers: tuple[str, ...] = ()
    secret_query: tuple[str, ...] = ()
    # Each resolved secret, and each whole value that holds one (e.g. "Bearer <secret>").
    secrets: tuple[str, ...] = field(default=(), repr=False)
    values: tuple[tuple[str, str], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Vault:
    targets: tuple[Target, ...] = ()
    files: tuple[Path, ...] = ()  # the credentials file and every file it reads secrets from

    def select(self, call: CallFacts) -> Target | None:
        """The first target that matches `call`."""
        return next((target for target in self.targets if matches(target.match, call)), None)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s for target in self.targets for s in target.secrets))

    @property
    def values(self) -> tuple[tuple[str, str], ...]:
        return tuple(dict.fromkeys(v for target in self.targets for v in target.values))


def load_vault(path: str | Path) -> Vault:
    """Load, validate and resolve a credentials file; VaultError lists every problem."""
    display = str(path)
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VaultError([RuleError(display, 0, f"cannot read the file: {exc}")]) from None
    return load_vault_text(text, display, path.resolve().parent, path)


def load_vault_text(text: str, display: str = "<credentials>", base: Path | None = None,
                    file: Path | None = None) -> Vault:
    """`load_vault` on YAML text; `display` stands for the file in messages, `base` is where
    relative `${file:...}` paths start."""
    reader = _Reader(display, base)
    targets = reader.read(text)
    if reader.errors:
        raise VaultError(reader.errors)
    files = ([file] if file else []) + sorted({Path(f) for f in reader.secret_files})
    return Vault(tuple(targets), tuple(files))


class _Reader(_Loader):
    """The rule loader's checks (keys, globs, choices: same messages), for targets."""

    def __init__(self, display: str, base: Path | None) -> None:
        super().__init__()
        self.file = display
        self.base = base
        self.secret_files: list[str] = []

    def read(self, text: str) -> list[Target]:
        try:
            document = YAML(typ="rt").load(text)
        except MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = (exc.problem or exc.context or "invalid YAML").strip()
            self.error(self.file, mark.line + 1 if mark is not None else 0, f"YAML error: {problem}")
            return []
        except YAMLError as exc:
            self.error(self.file, 0, f"YAML error: {exc}")
            return []
        if not isinstance(document, CommentedMap) or "targets" not in document:
            self.error(self.file, 1, "a credentials file is a mapping with a list of targets "
                       "(targets: [{match: {host: ...}, headers: {...}}])")
            return []
        self.check_keys(document, TOP_KEYS, "the top level")
        items = document["targets"]
        if not isinstance(items, CommentedSeq):
            self.err(document, "targets", "'targets' must be a list")
            return []
        targets = []
        for index, item in enumerate(items):
            if not isinstance(item, CommentedMap):
                self.err(items, index, f"target #{index + 1} must be a mapping with match and headers")
                continue
            target = self.target(item, index)
            if target is not None:
                targets.append(target)
        return targets

    def target(self, node: CommentedMap, index: int) -> Target | None:
        errors = len(self.errors)
        name = self.string(node, "name", f"target #{index + 1}")
        where = f"target '{name}'" if name else f"target #{index + 1}{_summary(node.get('match'))}"
        if name:
            self.unique("target", name, node, "name", "target name")
        self.check_keys(node, TARGET_KEYS, where)
        match = self.call_match(node, where)
        passes = node.get("pass_caller_token", False)
        if not isinstance(passes, bool):
            self.err(node, "pass_caller_token", f"{where}: pass_caller_token is true or false")
            passes = False
        headers = self.values(node, "headers", where, header=True)
        query = self.values(node, "query", where, header=False)
        if not headers and not query and not passes:
            self.err(node, None, f"{where}: needs headers, query or pass_caller_token: true "
                     "(what should the backend receive?)")
        if passes and any(name.lower() == "authorization" for name, *_ in headers):
            self.err(node, "headers", f"{where}: pass_caller_token already sets Authorization "
                     "(the caller's token); remove one of them")
        if len(self.errors) > errors or match is None:
            return None
        resolved: dict[str, list[tuple[str, str]]] = {"headers": [], "query": []}
        secret_names: dict[str, list[str]] = {"headers": [], "query": []}
        secrets: list[str] = []
        values: list[tuple[str, str]] = []
        for kind, entries in (("headers", headers), ("query", query)):
            for key, template, line in entries:
                try:
                    value, found = resolve_template(template, f"{where}: {kind[:-1] if kind == 'headers' else 'query parameter'} {key}")
                except ValueError as exc:
                    self.error(self.file, line, str(exc))
                    continue
                resolved[kind].append((key, value))
                if found:
                    secret_names[kind].append(key)
                    secrets.extend(found)
                    values.append((value, found[0]))
        if len(self.errors) > errors:
            return None
        return Target(where, match, passes, tuple(resolved["headers"]), tuple(resolved["query"]),
                      tuple(secret_names["headers"]), tuple(secret_names["query"]),
                      tuple(dict.fromkeys(secrets)), tuple(values))

    def call_match(self, node: CommentedMap, where: str) -> Match | None:
        if "match" not in node:
            self.err(node, None, f"{where}: missing 'match' (e.g. match: {{host: crm.internal}}; "
                     "match: {} matches every call)")
            return None
        match = node["match"]
        if match is None:
            match = CommentedMap()
        if not isinstance(match, CommentedMap):
            self.err(node, "match", f"{where}: 'match' must be a mapping such as {{host: crm.internal}}")
            return None
        at = f"{where}: match"
        for key in match:
            if key in DATA_KEYS:
                self.err(match, key, f"{at}: '{key}' is about values in a body; a credential is "
                         f"chosen per call (use {', '.join(MATCH_KEYS)})")
            elif key not in MATCH_KEYS:
                self.err(match, key, f"{at}: unknown key '{key}'{_suggest(str(key), MATCH_KEYS)} "
                         f"(allowed: {', '.join(MATCH_KEYS)})")
        return Match(**self.which_call(match, at), **self.which_caller(match, at))

    def values(self, node: CommentedMap, key: str, where: str, header: bool) -> list[tuple[str, Template, int]]:
        """The parsed templates of `headers` or `query`, with the line of each."""
        if key not in node:
            return []
        entries = node[key]
        if not isinstance(entries, CommentedMap) or not entries:
            example = "{Authorization: \"Bearer ${env:TOKEN}\"}" if header else "{api_key: \"${env:KEY}\"}"
            self.err(node, key, f"{where}: '{key}' must be a mapping of names to values, e.g. {example}")
            return []
        parsed, seen = [], set()
        for name, text in entries.items():
            line = _line(entries, name)
            what = f"{where}: {'header' if header else 'query parameter'} {name}"
            if not isinstance(name, str) or (header and not HEADER_NAME.fullmatch(name)) or not name:
                self.error(self.file, line, f"{what}: not a valid {'header' if header else 'parameter'} name")
                continue
            if header and name.lower() in RESERVED_HEADERS:
                self.error(self.file, line, f"{what}: the gateway does not let a credential replace this header")
                continue
            if name.lower() in seen if header else name in seen:
                self.error(self.file, line, f"{what}: given twice")
                continue
            seen.add(name.lower() if header else name)
            if not isinstance(text, str):
                self.error(self.file, line, f"{what}: the value must be a string (quote it)")
                continue
            try:
                template = parse_template(text, self.base)
            except TemplateError as exc:
                self.error(self.file, line, f"{what}: {exc}")
                continue
            self.secret_files += [p.name for p in template if isinstance(p, Reference) and p.kind == "file"]
            parsed.append((name, template, line))
        return parsed


def _summary(match: Any) -> str:
    """` (host crm.internal)`: a nameless target is known by its first match keys."""
    if not isinstance(match, dict) or not match:
        return ""
    shown = [f"{key} {value if isinstance(value, str) else ','.join(map(str, value)) if isinstance(value, list) else value}"
             for key, value in list(match.items())[:2]]
    return f" ({', '.join(shown)})"
