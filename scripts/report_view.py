"""`toolgate sessions report --format rich`: a picture of a run for people, drawn with rich
from the admin API's `/api/report` answer (the same from a store, a running gateway or a
fleet's archive): a header with the range and the verdict on `--fail-on`, calls over time by
decision, the top functions, the labels found, the held calls' waits, and the failed calls.

Everything shown is computed by the store (`sessions.query.report`); this module only draws.
The chart's columns are the answer's time buckets, so the command asks for as many as the
terminal fits (`chart_buckets`). Colours come from the console: none on a pipe or under
NO_COLOR, where each decision's bars get their own glyph instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from toolgate.scripts.cli_sessions import DECISION_STYLES

# Bottom to top in a column: the decisions that matter most sit on top, where they show.
STACK_ORDER = ("allow", "mask", "approve", "interrupted", "block", "deny")
# When a column is too short for every decision in it, these keep their cell first.
SEVERITY = ("deny", "block", "interrupted", "approve", "mask", "allow")
# Without colour, a glyph per decision tells the stacked bars apart.
GLYPHS = {"allow": "█", "mask": "▓", "approve": "▒", "interrupted": "░", "block": "X",
          "deny": "#"}
OTHER_GLYPH, BAR = "?", "█"
# The listing's colours, but block and deny (both red there) must differ in a stacked bar.
STYLES = {**DECISION_STYLES, "deny": "magenta", "interrupted": "bright_black"}
LEVEL_STYLES = {"restricted": "bold red", "confidential": "yellow", "internal": "cyan",
                "public": "dim"}
CHART_HEIGHT = 8  # rows of the tallest column
MOST_BUCKETS = 40
TOP_FUNCTIONS = 10
FAILED_SHOWN = 20


def chart_buckets(width: int) -> int:
    """How many time buckets to ask the report for, so the chart fits `width` columns beside
    its count axis: 40 at most, 10 at least."""
    return max(10, min(MOST_BUCKETS, width - 8))


def report_view(report: dict[str, Any]) -> RenderableType:
    """The whole picture of a `/api/report` answer."""
    parts: list[RenderableType] = [header(report)]
    if not report["total"]:
        parts.append(Text("No calls were recorded in this range: nothing to chart.", style="dim"))
        return Group(*parts)
    if "timeline" in report:
        parts += [Text(), DecisionChart(report["timeline"])]
    parts += [Text(), functions_table(report["by_function"])]
    if "timeline" in report:
        parts += [Text(), labels_table(report["labels"]), Text(), holds_view(report["holds"])]
    else:  # an admin API from before the timeline, labels and waits were reported
        parts.append(Text("(no timeline, labels or held-call waits: the gateway that answered "
                          "predates them)", style="dim"))
    if report["fail_on"] and report["failed"]:
        parts += [Text(), failed_table(report)]
    return Group(*parts)


def header(report: dict[str, Any]) -> RenderableType:
    timeline = report.get("timeline") or {}
    start = report.get("since") or timeline.get("start")
    end = report.get("until") or timeline.get("end")
    total = report["total"]
    title = Text("toolgate sessions report", style="bold")
    title.append(f"  {total} call{'' if total == 1 else 's'}" if total else "  no calls",
                 style="bold")
    if start or end:
        title.append(f"  {_when(start) if start else '…'} → "
                     f"{_when(end, start) if end else 'now'}")
        if start and end:
            span = (_time(end) - _time(start)).total_seconds() * 1000
            title.append(f" ({duration(span)})", style="dim")
    lines: list[RenderableType] = [title]
    if total:
        lines.append(decision_counts(report["by_decision"], prefix="  "))
    fail_on = report["fail_on"]
    if not fail_on:
        lines.append(Text("  no --fail-on given: nothing checked", style="dim"))
    elif report["passed"]:
        lines.append(Text(f"  PASSED: no call was {' or '.join(fail_on)}", style="bold green"))
    else:
        lines.append(Text(f"  FAILED: {report['failed_count']} call(s) were "
                          f"{' or '.join(fail_on)}", style="bold red"))
    return Group(*lines)


class DecisionChart:
    """Calls over time: one column per time bucket, a stack of cells per decision (height
    scaled to the busiest bucket), a count axis, a time axis (UTC) and a legend."""

    def __init__(self, timeline: dict[str, Any], height: int = CHART_HEIGHT) -> None:
        self.buckets = timeline.get("buckets") or []
        self.bucket_ms = timeline.get("bucket_ms")
        self.height = height

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text(f"Calls over time ({bucket_width(self.bucket_ms)} per column, UTC)"
                   if self.bucket_ms else "Calls over time", style="bold")
        if not self.buckets:
            yield Text("  no calls", style="dim")
            return
        plain = console.no_color or console.color_system is None
        totals = [sum(b["decisions"].values()) for b in self.buckets]
        busiest = max(totals) or 1
        height = min(self.height, busiest)
        columns = [stack(b["decisions"], round_up(total * height / busiest, total))
                   for b, total in zip(self.buckets, totals)]
        pad = len(str(busiest))
        room = options.max_width - pad - 2
        gap = " " if room >= 2 * len(columns) else ""  # bars apart when the width allows
        for row in range(height, 0, -1):
            line = Text()
            line.append(f"{busiest if row == height else '':>{pad}} │", style="dim")
            for cells in columns:
                decision = cells[row - 1] if row <= len(cells) else None
                if decision is None:
                    line.append(" " + gap)
                else:
                    line.append(GLYPHS.get(decision, OTHER_GLYPH) if plain else BAR,
                                style=STYLES.get(decision, "white"))
                    line.append(gap)
            yield line
        ticks, labels = self.time_axis(room, 1 + len(gap))
        yield Text(f"{0:>{pad}} └" + ticks, style="dim")
        yield Text(" " * (pad + 2) + labels, style="dim")
        legend = Text(" " * (pad + 2))
        seen = _ordered({d for b in self.buckets for d in b["decisions"]})
        for decision in seen:
            count = sum(b["decisions"].get(decision, 0) for b in self.buckets)
            legend.append(GLYPHS.get(decision, OTHER_GLYPH) if plain else BAR,
                          style=STYLES.get(decision, "white"))
            legend.append(f" {decision} {count}   ")
        yield legend

    def time_axis(self, room: int, step: int = 1) -> tuple[str, str]:
        """The axis line (a tick under each labelled column, columns `step` characters apart)
        and the labels' line: a bucket's start under its tick, as many as fit."""
        starts = [_time(b["start"]) for b in self.buckets]
        fmt = time_format(self.bucket_ms, starts[0], starts[-1])
        ticks = ["─"] * (len(starts) * step)
        labels = [" "] * max(room, len(ticks))
        index = 0
        while index < len(starts):
            label = starts[index].strftime(fmt)
            if fmt.endswith(".%f"):
                label = label[:-3]  # milliseconds
            at = index * step
            if at + len(label) > len(labels):
                break
            ticks[at] = "┬"
            labels[at:at + len(label)] = label
            index += -(-(len(label) + 2) // step)  # the next column clear of this label
        return "".join(ticks).rstrip(), "".join(labels).rstrip()


def stack(decisions: dict[str, int], height: int) -> list[str]:
    """A column's cells, bottom to top: `height` cells shared among the decisions in
    proportion to their counts, each decision present getting one first (the most severe
    first when there are fewer cells than decisions)."""
    present = [d for d in decisions if decisions[d]]
    total = sum(decisions[d] for d in present)
    cells = {d: 0 for d in present}
    for decision in sorted(present, key=_severity)[:height]:
        cells[decision] = 1
    for _ in range(height - sum(cells.values())):
        wanted = max(present, key=lambda d: (decisions[d] * height / total - cells[d],
                                             -_severity(d)))
        cells[wanted] += 1
    return [d for d in _ordered(present) for _ in range(cells[d])]


def round_up(value: float, total: int) -> int:
    """A column's height: at least one cell for a bucket with any call."""
    return max(1, round(value)) if total else 0


def time_format(bucket_ms: int | None, first: datetime, last: datetime) -> str:
    """strftime for the time axis: as fine as a bucket, with the date when the range spans
    days."""
    bucket_ms = bucket_ms or 1000
    if bucket_ms >= 86_400_000:
        return "%Y-%m-%d"
    day = "%m-%d " if first.date() != last.date() else ""
    if bucket_ms < 1000:
        return day + "%H:%M:%S.%f"
    return day + ("%H:%M:%S" if bucket_ms < 60_000 else "%H:%M")


def functions_table(by_function: list[dict[str, Any]]) -> RenderableType:
    ranked = sorted(by_function, key=lambda f: (-f["calls"], str(f["function"])))
    table = _table("Top functions")
    protocols = len({f["protocol"] for f in ranked}) > 1  # a column only when it tells apart
    table.add_column("function", overflow="fold")
    if protocols:
        table.add_column("protocol")
    table.add_column("calls", justify="right")
    table.add_column("decisions")
    table.add_column("p50", justify="right")
    table.add_column("p95", justify="right")
    for entry in ranked[:TOP_FUNCTIONS]:
        table.add_row(str(entry["function"]),
                      *([str(entry["protocol"])] if protocols else []), str(entry["calls"]),
                      decision_counts(entry["decisions"]), duration(entry.get("p50_ms")),
                      duration(entry.get("p95_ms")))
    if len(ranked) > TOP_FUNCTIONS:
        rest = ranked[TOP_FUNCTIONS:]
        table.caption = (f"and {len(rest)} more function(s), {sum(f['calls'] for f in rest)} "
                         "call(s): --format text lists them all")
        table.caption_justify = "left"
    return table


def labels_table(labels: list[dict[str, Any]] | None) -> RenderableType:
    if not labels:
        return Group(Text("Labels found", style="bold"),
                     Text("  no labelled value was found", style="dim"))
    table = _table("Labels found")
    for name, justify in (("label", "left"), ("level", "left"), ("findings", "right"),
                          ("calls", "right"), ("actions", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for entry in labels:
        actions = ", ".join(f"{action} {n}" for action, n in entry["actions"].items())
        table.add_row(entry["label"], Text(str(entry["level"]),
                                           style=LEVEL_STYLES.get(entry["level"], "")),
                      str(entry["findings"]), str(entry["calls"]), actions)
    return table


def holds_view(holds: dict[str, Any] | None) -> RenderableType:
    title = Text("Held calls", style="bold")
    if not holds or not holds["count"]:
        return Group(title, Text("  no call was held for approval", style="dim"))
    summary = Text(f"  {holds['count']} held: ")
    summary.append(", ".join(f"{n} {d}" for d, n in holds["decisions"].items()))
    summary.append(f"; waited p50 {duration(holds['p50_ms'])}, p95 {duration(holds['p95_ms'])}, "
                   f"max {duration(holds['max_ms'])}")
    decisions = list(holds["decisions"])
    table = _table(None)
    table.add_column("channel")
    table.add_column("held", justify="right")
    for decision in decisions:
        table.add_column(decision, justify="right")
    for name in ("p50", "p95", "max"):
        table.add_column(name, justify="right")
    for entry in holds["by_channel"]:
        table.add_row(str(entry["channel"]), str(entry["count"]),
                      *(str(entry["decisions"].get(d, 0)) for d in decisions),
                      duration(entry["p50_ms"]), duration(entry["p95_ms"]),
                      duration(entry["max_ms"]))
    return Group(title, summary, table)


def failed_table(report: dict[str, Any]) -> RenderableType:
    failed = report["failed"]
    start = report.get("since") or (report.get("timeline") or {}).get("start")
    table = _table(f"Failed calls ({' or '.join(report['fail_on'])})", "bold red")
    for name in ("started_at", "decision", "function", "caller", "status", "rules", "call_id"):
        table.add_column(name, overflow="fold")
    for call in failed[:FAILED_SHOWN]:
        table.add_row(_when(call["started_at"], start),
                      Text(str(call["decision"]), style=STYLES.get(call["decision"], "")),
                      str(call["function"]), str(call["subject"] or call["client_addr"] or "?"),
                      "" if call["status"] is None else str(call["status"]),
                      ",".join(call["rules"]) or "-", str(call["call_id"]))
    if report["failed_count"] > FAILED_SHOWN:
        table.caption = (f"and {report['failed_count'] - FAILED_SHOWN} more: --format text "
                         "or json lists them all")
        table.caption_justify = "left"
    return table


def decision_counts(decisions: dict[str, int], prefix: str = "") -> Text:
    """`allow 4 · mask 3 · block 1`, each decision in its colour."""
    text = Text(prefix)
    for i, decision in enumerate(_ordered(decisions)):
        if i:
            text.append(" · ", style="dim")
        text.append(f"{decision} {decisions[decision]}", style=STYLES.get(decision, ""))
    return text


def bucket_width(ms: int) -> str:
    """A bucket's round width: 50 ms, 15 s, 5 min, 3 h, 1 d, 2 w."""
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000),
                       ("min", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size} {unit}"
    return duration(ms)


def duration(ms: float | None) -> str:
    """A duration for people: 8.5 ms, 120 ms, 2.4 s, 3m 05s, 2h 10m, 3d 4h."""
    if ms is None:
        return "-"
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def _table(title: str | None, style: str = "bold") -> Table:
    return Table(box=box.SIMPLE_HEAD, show_edge=False, title=title, title_justify="left",
                 title_style=style)


def _ordered(decisions: Iterable[str]) -> list[str]:
    """Decisions in stacking order (the known ones first, then the rest by name)."""
    known = {d: i for i, d in enumerate(STACK_ORDER)}
    return sorted(decisions, key=lambda d: (known.get(d, len(known)), str(d)))


def _severity(decision: str) -> int:
    return SEVERITY.index(decision) if decision in SEVERITY else len(SEVERITY)


def _time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _when(text: str | None, since: str | None = None) -> str:
    """An ISO time as `2026-05-01 12:00:05 UTC`; only the clock when `since` is the same day."""
    if not text:
        return "-"
    value = _time(text).astimezone(timezone.utc)
    if since and _time(since).astimezone(timezone.utc).date() == value.date():
        return value.strftime("%H:%M:%S UTC")
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")
