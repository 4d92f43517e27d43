"""Colours computed per value (heatmap cells), with text that stays readable on them.

Contrast follows WCAG 2.x: relative luminance of sRGB colours, ratio (L1 + 0.05) / (L2 + 0.05).
Pure black or pure white text always reaches at least 4.58:1 on some side of any background,
so choosing the better of the two keeps every heat cell above the 4.5:1 the pages promise.
"""

from __future__ import annotations

from typing import Final

RGB = tuple[int, int, int]

DARK_TEXT: Final = "#000000"
LIGHT_TEXT: Final = "#ffffff"
# The two ends of the heat scale: a pale blue-grey for "none" and a deep blue for "the most".
HEAT_LOW: Final[RGB] = (241, 245, 251)
HEAT_HIGH: Final[RGB] = (23, 55, 125)


def parse_hex(colour: str) -> RGB:
    """`#rrggbb` to its three channels."""
    digits = colour.removeprefix("#")
    if len(digits) != 6:
        raise ValueError(f"expected #rrggbb, got {colour!r}")
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def to_hex(rgb: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _linear(channel: int) -> float:
    value = channel / 255
    return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4


def relative_luminance(colour: str) -> float:
    red, green, blue = (_linear(channel) for channel in parse_hex(colour))
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def contrast_ratio(first: str, second: str) -> float:
    lighter, darker = sorted((relative_luminance(first), relative_luminance(second)),
                             reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def readable_text(background: str) -> str:
    """Black or white, whichever contrasts more with `background`."""
    dark = contrast_ratio(DARK_TEXT, background)
    return DARK_TEXT if dark >= contrast_ratio(LIGHT_TEXT, background) else LIGHT_TEXT


def heat_colour(fraction: float) -> str:
    """The heat scale at `fraction` (clamped to 0..1), interpolated channel by channel."""
    share = min(max(fraction, 0.0), 1.0)
    mixed = tuple(round(low + (high - low) * share)
                  for low, high in zip(HEAT_LOW, HEAT_HIGH, strict=True))
    return to_hex((mixed[0], mixed[1], mixed[2]))
