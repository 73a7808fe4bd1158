"""Tool-call arguments that travel as a JSON *string* (OpenAI): decode, inspect, re-encode."""

from __future__ import annotations

import json
from typing import Any, Callable

from toolgate.rules.protocols import jsonbody


def decode_arguments(raw: Any) -> tuple[Any, Callable[[Any], Any]]:
    """The value to inspect and how to turn a masked value back into the wire form.

    Valid JSON is decoded strictly (duplicate keys are refused: the function might read the
    other copy); text that is not JSON at all (models do emit it) is inspected as text.
    """
    if not isinstance(raw, str):
        return raw, lambda value: value
    if not jsonbody.is_json(raw):
        return raw, lambda value: value if isinstance(value, str) else json.dumps(value)
    return jsonbody.loads(raw), lambda value: jsonbody.dumps(value).decode()
