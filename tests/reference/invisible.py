"""The characters a reader does not see (the reference's set; the core's is core/src/text.rs)."""

import re

# Characters a reader does not see: format characters (Unicode category Cf: zero-width space and
# joiners, soft hyphen, word joiner, BOM, bidi controls, tags...) and control characters other
# than tab and line breaks. Split by them, `4111\u200b1111...` still reads as a card number, so
# detectors match strings with them taken out (positions are mapped back for masking).
INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891"
    "\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f]"
)
