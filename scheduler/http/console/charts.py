"""The throughput chart as inline SVG geometry: one stacked bar per time bucket (succeeded,
failed, skipped, cancelled), drawn in a fixed viewBox that the page stretches to its width.

Text stays outside the SVG (in the page's HTML around it), so it never shrinks with the
drawing on a phone; each bar carries a <title> with its numbers, and the page offers the same
numbers as a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from scheduler.http.console.reads import Throughput
from shared.vocabulary import TERMINAL_ITEM_STATES

VIEW_WIDTH: Final = 600
VIEW_HEIGHT: Final = 160
GAP_SHARE: Final = 0.15  # of a bar's slot, between bars
# At least 3:1 against the white plot (WCAG 1.4.11, graphical objects), and told apart by
# more than hue: the legend names each and the bars stack in a fixed order.
FILLS: Final = {
    "succeeded": "#2f5fb3",
    "failed": "#b3261e",
    "skipped": "#6b7280",
    "cancelled": "#8a4100",
}


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    fill: str
    state: str
    count: int


@dataclass(frozen=True)
class Bar:
    start: str
    end: str
    total: int
    rects: tuple[Rect, ...]
    title: str


@dataclass(frozen=True)
class Chart:
    width_s: int
    bars: tuple[Bar, ...]
    peak: int
    first: str
    last: str

    @property
    def empty(self) -> bool:
        return not self.bars

    @property
    def summary(self) -> str:
        """What the chart shows, in words, for screen readers."""
        if self.empty:
            return "No session has finished yet."
        total = sum(bar.total for bar in self.bars)
        return (f"{total} sessions finished between {self.first} and {self.last}, in "
                f"{len(self.bars)} buckets of {self.width_s} s; at most {self.peak} in one.")


def _clock(moment: datetime, fmt: str = "%H:%M:%S") -> str:
    return moment.astimezone(UTC).strftime(fmt)


def throughput_chart(throughput: Throughput) -> Chart:
    buckets = throughput.buckets
    if not buckets:
        return Chart(throughput.width_s, (), 0, "", "")
    peak = max(bucket.total for bucket in buckets) or 1
    slot = VIEW_WIDTH / len(buckets)
    width = slot * (1 - GAP_SHARE)
    bars = []
    for index, bucket in enumerate(buckets):
        x = index * slot + (slot - width) / 2
        y = float(VIEW_HEIGHT)
        rects = []
        for state in TERMINAL_ITEM_STATES:
            count = bucket.counts.get(state, 0)
            if not count:
                continue
            height = VIEW_HEIGHT * count / peak
            y -= height
            rects.append(Rect(round(x, 2), round(y, 2), round(width, 2), round(height, 2),
                              FILLS[state], state, count))
        end = bucket.start + timedelta(seconds=throughput.width_s)
        parts = ", ".join(f"{rect.count} {rect.state}" for rect in rects) or "none finished"
        title = f"{_clock(bucket.start)}–{_clock(end)}: {parts}"
        bars.append(Bar(_clock(bucket.start), _clock(end), bucket.total, tuple(rects), title))
    first = buckets[0].start
    last = buckets[-1].start + timedelta(seconds=throughput.width_s)
    return Chart(throughput.width_s, tuple(bars), peak,
                 _clock(first, "%Y-%m-%d %H:%M:%S UTC"), _clock(last, "%H:%M:%S UTC"))
