import datetime

import pytest

from toolgate.rules import format_duration, parse_duration


@pytest.mark.parametrize(
    "text, expected",
    [
        ("90d", datetime.timedelta(days=90)),
        ("12h", datetime.timedelta(hours=12)),
        ("30m", datetime.timedelta(minutes=30)),
        ("45s", datetime.timedelta(seconds=45)),
        (" 7d ", datetime.timedelta(days=7)),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "90", "d", "90 days", "1.5h", "-5m", "0s", "10w", "5m30s", None, 90])
def test_bad_durations_say_what_to_write(text):
    with pytest.raises(ValueError, match="90d"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["90d", "12h", "30m", "45s", "90m"])
def test_format_duration_round_trips(text):
    assert format_duration(parse_duration(text)) == text
