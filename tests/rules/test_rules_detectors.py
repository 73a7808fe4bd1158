"""Each detector: values it must find (also inside longer text), and look-alikes it must reject."""

import base64
import json

import pytest

from toolgate.rules.detectors import DETECTORS


def found(detector: str, text: str) -> list[str]:
    return [text[start:end] for start, end in DETECTORS[detector].find(text)]


def b64url(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


JWT = b64url({"alg": "HS256", "typ": "JWT"}) + "." + b64url({"sub": "1234567890", "name": "Jane"}) + ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
GITHUB = "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5"
SLACK = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
STRIPE = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
OPENAI = "sk-proj-" + "Ab3De5Gh7Jk9Mn1Pq3St5Vx7Za9Ce1Gi3Km5Oq7" + "T3BlbkFJ" + "Xy2Wv4Ut6Sr8Qp0On2Ml"
GOOGLE = "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
ANTHROPIC = "sk-ant-api03-" + "Zx8Yw7Vu6Ts5Rq4Po3Nm2Lk1Jh0Gf9Ed8Cb7Aa6Zy5Xw4Vu3Ts2Rq1Po0NmLkJhGfEdCbA-xyzW"


def _private_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


PEM = _private_key_pem()

POSITIVE = [
    ("credit_card", "4242 4242 4242 4242"),
    ("credit_card", "4111-1111-1111-1111"),
    ("credit_card", "5555555555554444"),
    ("credit_card", "378282246310005"),
    ("us_ssn", "123-45-6789"),
    ("us_ssn", "123 45 6789"),
    ("us_ssn", "078-05-1120"),
    ("iban", "DE89 3704 0044 0532 0130 00"),
    ("iban", "GB82WEST12345698765432"),
    ("iban", "FR1420041010050500013M02606"),
    ("iban", "NO9386011117947"),
    ("email", "jane.doe@example.com"),
    ("email", "a+tag@mail.example.co.uk"),
    ("phone", "+14155552671"),
    ("phone", "+44 20 7946 0958"),
    ("phone", "(415) 555-2671"),
    ("phone", "415-555-2671"),
    ("phone", "415.555.2671"),
    ("phone", "1-800-555-0199"),
    ("ip_address", "192.168.1.20"),
    ("ip_address", "8.8.8.8"),
    ("ip_address", "2001:db8::8a2e:370:7334"),
    ("ip_address", "fe80::1"),
    ("ip_address", "2001:0db8:0000:0000:0000:ff00:0042:8329"),
    ("ip_address", "::ffff:10.0.0.1"),
    ("aws_access_key", "AKIAIOSFODNN7EXAMPLE"),
    ("aws_access_key", "ASIAY34FZKBOKMUTVV7A"),
    ("private_key", PEM.strip()),
    ("jwt", JWT),
    ("github_token", GITHUB),
    ("github_token", "github_pat_11ABCDEFG0" + "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5oQ7sU9wY1" + "bD3fH5jL7nP9rT1vX3zB5dF7hJ9lN1pR3tV5xZ7b"),
    ("slack_token", SLACK),
    ("stripe_key", STRIPE),
    ("stripe_key", "rk_live_" + "51Hq2Kx9LmN4pQ7rS0tU3vW6"),
    ("openai_key", OPENAI),
    ("openai_key", "sk-" + "Ab3De5Gh7Jk9Mn1Pq3St" + "T3BlbkFJ" + "Xy2Wv4Ut6Sr8Qp0On2Ml"),
    ("anthropic_key", ANTHROPIC),
    ("google_api_key", GOOGLE),
]


@pytest.mark.parametrize("detector, value", POSITIVE)
def test_finds_the_value_alone(detector, value):
    assert found(detector, value) == [value]


@pytest.mark.parametrize("detector, value", POSITIVE)
def test_finds_the_value_inside_text(detector, value):
    text = f"Note: {value}, see above."
    assert found(detector, text) == [value]
    start = text.index(value)
    assert list(DETECTORS[detector].find(text)) == [(start, start + len(value))]


NEGATIVE = [
    ("credit_card", "4242 4242 4242 4241", "fails Luhn"),
    ("credit_card", "4242424242424241", "16 digits failing Luhn"),
    ("credit_card", "0000 0000 0000 0000", "one repeated digit"),
    ("credit_card", "1234567812345670", "Luhn-valid but no card issuer starts with 1"),
    ("credit_card", "424242424242", "12 digits"),
    ("credit_card", "42424242424242424242", "20 digits"),
    ("credit_card", "4242 4242-4242 4242", "mixed separators"),
    ("credit_card", "order 98424242424242424242", "inside a longer number"),
    ("us_ssn", "000-12-3456", "area 000"),
    ("us_ssn", "666-12-3456", "area 666"),
    ("us_ssn", "912-34-5678", "area 9xx"),
    ("us_ssn", "123-00-4567", "group 00"),
    ("us_ssn", "123-45-0000", "serial 0000"),
    ("us_ssn", "123456789", "bare digits are not an SSN"),
    ("us_ssn", "123-45 6789", "mixed separators"),
    ("us_ssn", "2024-123-45-6789", "part of a longer dashed number"),
    ("iban", "DE88 3704 0044 0532 0130 00", "wrong check digits"),
    ("iban", "DE89370400440532013", "too short for DE"),
    ("iban", "XX89370400440532013000", "unknown country"),
    ("iban", "de89370400440532013000", "lower case"),
    ("email", "not an email", "no at"),
    ("email", "a@b", "no domain"),
    ("email", "x..y@example.com", "double dot"),
    ("email", ".x@example.com", "leading dot"),
    ("email", "user@-example.com", "bad domain label"),
    ("phone", "4155552671", "bare digits"),
    ("phone", "2024-01-02", "a date"),
    ("phone", "123-45-6789", "an SSN"),
    ("phone", "(115) 555-2671", "NANP area codes start with 2-9"),
    ("phone", "+1234", "too short"),
    ("phone", "version 1.2.3", "a version"),
    ("ip_address", "999.1.1.1", "octet too large"),
    ("ip_address", "01.2.3.4", "leading zero"),
    ("ip_address", "1.2.3", "three parts"),
    ("ip_address", "10:30:00", "a time"),
    ("ip_address", "00:1A:2B:3C:4D:5E", "a MAC address"),
    ("ip_address", "Foo::bar", "a C++ name"),
    ("aws_access_key", "AKIA0000000000000000", "not base32"),
    ("aws_access_key", "AKIAIOSFODNN7EXAMPL", "too short"),
    ("private_key", "-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----", "no key material"),
    ("private_key", "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----", "a public key"),
    ("jwt", b64url({"typ": "JWT"}) + "." + b64url({"sub": "x"}) + ".abc", "header without alg"),
    ("jwt", "eyJub3Rqc29u.eyJzdWIiOiJ4In0.abc", "header is not JSON"),
    ("github_token", "ghp_" + "x" * 36, "placeholder"),
    ("github_token", "ghp_" + "aB3dE5gH7j", "too short"),
    ("slack_token", "xoxb-" + "a" * 30, "no structure"),
    ("stripe_key", "sk_live_" + "x" * 24, "placeholder"),
    ("openai_key", "sk-" + "a" * 48, "placeholder"),
    ("openai_key", "task-" + "Ab3De5Gh7Jk9Mn1Pq3St" + "T3BlbkFJ" + "Xy2Wv4Ut6Sr8Qp0On2Ml", "inside a word"),
    ("google_api_key", "AIza" + "0" * 35, "placeholder"),
]


@pytest.mark.parametrize("detector, value, why", NEGATIVE)
def test_rejects_look_alikes(detector, value, why):
    assert found(detector, value) == [], why
    assert found(detector, f"see {value} here") == [], why


def test_a_rejected_candidate_does_not_hide_a_real_card():
    assert found("credit_card", "ref 1234 4242 4242 4242 4242") == ["4242 4242 4242 4242"]


def test_iban_followed_by_text_in_capitals():
    assert found("iban", "BE71 0961 2345 6769 ABCD") == ["BE71 0961 2345 6769"]


def test_several_values_in_one_text():
    text = "ssn 123-45-6789 and 234-56-7890; bad 000-12-3456"
    assert found("us_ssn", text) == ["123-45-6789", "234-56-7890"]


def test_card_numbers_as_json_numbers():
    assert DETECTORS["credit_card"].matches_whole("4242424242424242")
    assert not DETECTORS["credit_card"].matches_whole("4242424242424241")
    assert DETECTORS["credit_card"].numbers and not DETECTORS["us_ssn"].numbers


def test_private_key_with_escaped_newlines():
    escaped = PEM.strip().replace("\n", "\\n")
    assert found("private_key", escaped) == [escaped]


def test_prefilter_needles():
    assert not DETECTORS["email"].could_contain("no at sign here")
    assert DETECTORS["email"].could_contain("a@b.co")
    assert DETECTORS["credit_card"].could_contain("anything")  # digits have no cheap needle


def test_every_detector_has_a_partial_mask_that_hides_the_value():
    for detector, value in POSITIVE:
        masked = DETECTORS[detector].partial(value)
        assert masked != value
        assert found(detector, masked) == [], f"{detector}: {masked!r} is detected again"


@pytest.mark.parametrize(
    "detector, value, partial",
    [
        ("us_ssn", "123-45-6789", "***-**-6789"),
        ("credit_card", "4242424242424242", "************4242"),
        ("credit_card", "4242 4242 4242 4242", "**** **** **** 4242"),
        ("email", "jane.doe@example.com", "j***@example.com"),
        ("iban", "DE89 3704 0044 0532 0130 00", "DE** **** **** **** **30 00"),
        ("phone", "+1 415 555 2671", "+* *** *** 2671"),
        ("ip_address", "192.168.1.20", "192.***.*.**"),
        ("aws_access_key", "AKIAIOSFODNN7EXAMPLE", "AKIA************MPLE"),
    ],
)
def test_partial_forms(detector, value, partial):
    assert DETECTORS[detector].partial(value) == partial


@pytest.mark.parametrize(
    "detector, a, b",
    [
        ("credit_card", "4242 4242 4242 4242", "4242424242424242"),
        ("us_ssn", "123-45-6789", "123 45 6789"),
        ("email", "Jane@Example.com", "jane@example.com"),
        ("iban", "DE89 3704 0044 0532 0130 00", "DE89370400440532013000"),
        ("phone", "(415) 555-2671", "+1 415 555 2671"),
        ("ip_address", "2001:0db8::1", "2001:db8::1"),
    ],
)
def test_normalized_forms_agree(detector, a, b):
    assert DETECTORS[detector].normalize(a) == DETECTORS[detector].normalize(b)


# -- every registered detector carries examples it finds and look-alikes it rejects -------------

@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_detector_declares_examples_and_counter_examples(name):
    detector = DETECTORS[name]
    assert detector.examples, f"{name} declares no example it must find"
    assert detector.counter_examples, f"{name} declares no look-alike it must reject"


EXAMPLES = [(name, value) for name, d in sorted(DETECTORS.items()) for value in d.examples]
COUNTER_EXAMPLES = [(name, value) for name, d in sorted(DETECTORS.items())
                    for value in d.counter_examples]


@pytest.mark.parametrize("detector, value", EXAMPLES)
def test_a_detector_finds_each_of_its_examples_alone_and_in_text(detector, value):
    assert found(detector, value) == [value]
    assert found(detector, f"Note: {value}, see above.") == [value]


@pytest.mark.parametrize("detector, value", COUNTER_EXAMPLES)
def test_a_detector_rejects_each_of_its_counter_examples_alone_and_in_text(detector, value):
    assert found(detector, value) == []
    assert found(detector, f"see {value} here") == []
