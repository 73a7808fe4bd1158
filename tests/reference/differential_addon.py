"""Loaded beside the gateway in the e2e tests' mitmdump processes (tests/harness.py): every
evaluate() of the real gateway is checked against the reference engine too. A difference raises
inside the policy hook, which fails the call closed (500) and logs both versions, so the e2e
test that made the call fails. (The summary of in-process checks is tests/reference/differential.py.)"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reference.differential import install  # noqa: E402

install(import_missing=False)
