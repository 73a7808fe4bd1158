"""Flatten a decoded body into the values detectors look at, remembering where each one lives.

The native core walks the body (`toolgate.rules._core.Document`): one iterative pass over dicts
and lists collects every string and every integer large enough to be a card number, plus a
table of containers (parent, key, kind), so that a finding's location is rendered as
`$.customers[0].ssn` only when it is needed, and masking can copy just the containers on the way
to a changed value instead of the whole body. A string that holds a JSON object or array is
decoded (by Python's own `json.loads`) and walked too (its items render as `$.payload<json>.ssn`);
the masking step re-encodes it. The tables (`containers`, `parents`, `keys`, `kinds`) become
Python lists only when something reads them.
"""

from __future__ import annotations

from toolgate.rules.core import native

HOLDER = 0  # node 0 is a one-item list holding the body, so the body itself has a (node, key): (0, 0)
PLAIN, DECODED_JSON = 0, 1

Document = native.Document

__all__ = ["DECODED_JSON", "HOLDER", "PLAIN", "Document"]
