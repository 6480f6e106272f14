"""templates/static/admin.css: every coloured status badge is readable (WCAG 2 AA, 4.5:1 for
text of its size, https://www.w3.org/TR/WCAG21/#contrast-minimum), its colours as the
stylesheet gives them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CSS = (Path(__file__).resolve().parents[1] / "templates/static/admin.css").read_text()
VARIABLES = dict(re.findall(r"--([a-z]+):\s*(#[0-9a-f]{6})", CSS))
BADGES = re.findall(
    r"^(\.status-[^{]+)\{\s*background:\s*(#[0-9a-f]{6});\s*color:\s*var\(--([a-z]+)\);",
    CSS,
    re.MULTILINE,
)


def luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(one: str, other: str) -> float:
    light, dark = sorted((luminance(one), luminance(other)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_the_stylesheet_has_the_badges_this_test_reads():
    assert len(BADGES) >= 10 and {"ok", "warn", "bad", "accent"} <= VARIABLES.keys()


@pytest.mark.parametrize(("selector", "background", "variable"), BADGES, ids=lambda v: v.strip())
def test_each_status_badge_is_readable(selector, background, variable):
    assert contrast(VARIABLES[variable], background) >= 4.5, selector
