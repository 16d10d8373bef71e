"""The seat-history sparkline: an accessible SVG from the stored samples (pure)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from services.gateway.history import Sample, sparkline_svg

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"


def sample(days_ago: float, open_seats: int, enrl_cap: int = 100) -> Sample:
    return Sample(
        at=NOW - timedelta(days=days_ago),
        open_seats=open_seats,
        enrl_cap=enrl_cap,
        enrl_tot=enrl_cap - open_seats,
    )


def parse(svg: str) -> ET.Element:
    """The SVG as XML: a parse error here is markup the browser would have to guess about."""
    return ET.fromstring(svg)


def path_points(svg: ET.Element) -> list[tuple[float, float]]:
    """The corners of the step line, in drawing order."""
    path = svg.find(f"{SVG}path")
    assert path is not None
    x = y = 0.0
    points = []
    for command, value in re.findall(r"([MHV])([0-9.]+(?: [0-9.]+)?)", path.attrib["d"]):
        if command == "M":
            x, y = (float(v) for v in value.split())
        elif command == "H":
            x = float(value)
        else:
            y = float(value)
        points.append((x, y))
    return points


def test_no_samples_is_an_empty_image_that_says_so() -> None:
    svg = parse(sparkline_svg([], now=NOW))
    assert svg.attrib["role"] == "img"
    assert svg.attrib["aria-label"] == "No seat history yet"
    title = svg.find(f"{SVG}title")
    assert title is not None
    assert title.text == "No seat history yet"
    assert svg.find(f"{SVG}path") is None


def test_one_sample_is_a_flat_line_to_now() -> None:
    svg = parse(sparkline_svg([sample(3, 4)], width=120, height=24, now=NOW))
    assert svg.attrib["aria-label"] == "Open seats over the last 14 days: 4 throughout"
    assert (svg.attrib["width"], svg.attrib["height"], svg.attrib["viewBox"]) == ("120", "24", "0 0 120 24")
    points = path_points(svg)
    assert {y for _, y in points} == {2.0}, "the only value is the top of the scale"
    # It starts 3 days before now: 11 of the 14 days in, and ends at the right edge.
    assert points[0][0] == round(2 + 116 * 11 / 14, 1)
    assert points[-1][0] == 118.0


def test_a_flat_line_of_zeros_sits_at_the_bottom() -> None:
    svg = parse(sparkline_svg([sample(10, 0), sample(5, 0)], now=NOW))
    assert svg.attrib["aria-label"] == "Open seats over the last 14 days: 0 throughout"
    assert {y for _, y in path_points(svg)} == {22.0}


def test_many_samples_step_between_their_values_and_the_summary_tells_the_range() -> None:
    samples = [sample(12, 0), sample(6, 3), sample(2, 1)]
    svg = parse(sparkline_svg(list(reversed(samples)), now=NOW))  # order of the input does not matter
    assert svg.attrib["aria-label"] == "Open seats over the last 14 days: 0 to 3, now 1"
    ys = [y for _, y in path_points(svg)]
    assert ys[0] == 22.0  # 0 seats
    assert min(ys) == 2.0  # 3 seats, the top
    assert ys[-1] == round(22 - 20 * 1 / 3, 1)  # now 1
    xs = [x for x, _ in path_points(svg)]
    assert xs == sorted(xs), "time runs left to right"
    end = svg.find(f"{SVG}circle")
    assert end is not None
    assert (float(end.attrib["cx"]), float(end.attrib["cy"])) == (118.0, ys[-1])


def test_a_sample_before_the_range_gives_its_start_and_older_ones_are_left_out() -> None:
    samples = [sample(40, 9), sample(20, 5), sample(1, 6)]
    svg = parse(sparkline_svg(samples, days=14, now=NOW))
    # 9 seats were 40 days ago: not in the last 14 days. 5 seats were what the range began with.
    assert svg.attrib["aria-label"] == "Open seats over the last 14 days: 5 to 6, now 6"
    assert path_points(svg)[0][0] == 2.0


def test_a_sample_from_a_clock_ahead_is_drawn_at_now() -> None:
    svg = parse(sparkline_svg([sample(2, 1), sample(-1, 2)], now=NOW))
    assert max(x for x, _ in path_points(svg)) == 118.0


def test_a_one_day_range_reads_as_one_day_and_sizes_stay_drawable() -> None:
    svg = parse(sparkline_svg([sample(0.5, 2)], width=0, height=-5, days=1, now=NOW))
    assert svg.attrib["aria-label"] == "Open seats over the last day: 2 throughout"
    assert (svg.attrib["width"], svg.attrib["height"]) == ("8", "8")
