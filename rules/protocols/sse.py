"""`text/event-stream`: events parsed incrementally, so a stream can be checked event by event
however the network splits it, and written back field by field."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_EVENT_BYTES = 16 * 1024 * 1024


@dataclass
class Event:
    """One event: its fields in order (`data` lines joined), comments kept."""

    fields: list[tuple[str, str]] = field(default_factory=list)

    @property
    def data(self) -> str | None:
        lines = [value for name, value in self.fields if name == "data"]
        return "\n".join(lines) if lines else None

    def with_data(self, data: str) -> "Event":
        """The same event with its data replaced (one `data:` line per line of `data`)."""
        fields: list[tuple[str, str]] = []
        placed = False
        for name, value in self.fields:
            if name != "data":
                fields.append((name, value))
            elif not placed:
                fields += [("data", line) for line in data.split("\n")]
                placed = True
        return Event(fields)

    def encode(self) -> bytes:
        out = []
        for name, value in self.fields:
            out.append(f":{value}" if name == "" else f"{name}: {value}")
        return ("\n".join(out) + "\n\n").encode()


class SseParser:
    """Feed it bytes as they arrive; it returns the events completed so far."""

    def __init__(self, max_event: int = MAX_EVENT_BYTES) -> None:
        self.buffer = b""
        self.max_event = max_event

    def feed(self, chunk: bytes) -> Iterator[Event]:
        """The events `chunk` completes, one at a time (a bad one raises after the good ones
        before it were handled)."""
        self.buffer += chunk
        while True:
            end, size = _event_end(self.buffer)
            if end < 0:
                break
            raw, self.buffer = self.buffer[:end], self.buffer[end + size:]
            event = parse_event(raw)
            if event.fields:
                yield event
        if len(self.buffer) > self.max_event:
            raise ValueError(f"an event is larger than {self.max_event} bytes")

    def finish(self) -> list[Event]:
        """The last event, if the stream ended without its blank line."""
        rest, self.buffer = self.buffer, b""
        event = parse_event(rest) if rest.strip() else Event()
        return [event] if event.fields else []


def _event_end(buffer: bytes) -> tuple[int, int]:
    """Index and length of the first blank-line separator, (-1, 0) if none yet."""
    best = (-1, 0)
    for separator in (b"\r\n\r\n", b"\n\n", b"\r\r"):
        index = buffer.find(separator)
        if index >= 0 and (best[0] < 0 or index < best[0]):
            best = (index, len(separator))
    return best


def parse_event(raw: bytes) -> Event:
    text = raw.decode("utf-8")  # UnicodeDecodeError: the caller refuses the stream
    event = Event()
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        event.fields.append((name, value))
    return event


def parse_all(body: bytes) -> list[Event]:
    parser = SseParser()
    return list(parser.feed(body)) + parser.finish()


def encode_all(events: list[Event]) -> bytes:
    return b"".join(event.encode() for event in events)
