"""Standard streams that can print anything gdtrain writes, whatever their encoding.

gdtrain prints a few characters outside ASCII: the loss sparkline's blocks, ellipses,
arrows, dashes, rich's table borders, and the ·, ±, ², ρ of the components' docs. A
stream that cannot encode them (PYTHONIOENCODING=ascii, a latin-1 locale, a file name
that is not valid UTF-8) would raise UnicodeEncodeError in the middle of the output.
Rather than choosing glyphs at every print, the streams get an encoding error handler
that writes an ASCII stand-in for each character the encoding lacks; rich already
draws its tables with ASCII borders on such streams (it reads their encoding).
"""

from __future__ import annotations

import codecs
import os
import sys
import unicodedata

ERRORS = "gdtrain-ascii"


def no_color() -> bool:
    """NO_COLOR set and not empty (https://no-color.org)."""
    return bool(os.environ.get("NO_COLOR"))


def console(stderr: bool = False):
    """A rich console for gdtrain's output. Under NO_COLOR it writes no escape sequence at
    all: rich's own NO_COLOR support drops colours but keeps bold and italics."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True,
                   color_system=None if no_color() else "auto")

_STAND_INS = {
    "…": "...", "→": "->", "←": "<-", "–": "-", "—": "-", "−": "-", "±": "+/-", "·": "*", "×": "x",
    "÷": "/", "²": "^2", "³": "^3", "≤": "<=", "≥": ">=", "≠": "!=", "≈": "~", "√": "sqrt",
    "‘": "'", "’": "'", "“": '"', "”": '"', "•": "*", "µ": "u",
    # the sparkline's eight heights, lowest first: still a curve in ASCII
    **dict(zip("▁▂▃▄▅▆▇█", "_.-:=+*#", strict=True)),
}


def _box_drawing(name: str) -> str:
    """`-`, `|` or `+` for a box-drawing character, from what its Unicode name says it joins."""
    words = set(name.split())
    across = bool(words & {"HORIZONTAL", "LEFT", "RIGHT"})
    down = bool(words & {"VERTICAL", "UP", "DOWN"})
    if across and down:
        return "+"
    return "-" if across else "|"


def stand_in(char: str) -> str | None:
    """ASCII for one character of ours: a look-alike, a box-drawing joint, a Greek letter's
    name; None for anything else (names and paths: the stream's own rule applies)."""
    if char in _STAND_INS:
        return _STAND_INS[char]
    name = unicodedata.name(char, "")
    if name.startswith("BOX DRAWINGS "):
        return _box_drawing(name)
    if name.startswith(("GREEK SMALL LETTER ", "GREEK CAPITAL LETTER ")) and " WITH " not in name:
        letter = name.rsplit(" ", 1)[1].lower()
        return letter if "SMALL" in name else letter.capitalize()
    return None


def _handler(original: str):
    """Stand-ins first; then the stream's own handler (surrogateescape writes a file name's
    undecodable byte back as it was); where that fails or is strict, Python's escape (\\xe9)."""
    own = codecs.lookup_error(original)

    def handle(error: UnicodeError) -> tuple[str | bytes, int]:
        if not isinstance(error, UnicodeEncodeError):
            raise error
        at = error.start  # one character at a time: the encoder calls again for the next one
        char = error.object[at]
        ascii_text = stand_in(char)
        if ascii_text is not None:
            return ascii_text, at + 1
        try:
            return own(UnicodeEncodeError(error.encoding, error.object, at, at + 1, error.reason))
        except UnicodeError:
            return char.encode("ascii", "backslashreplace").decode("ascii"), at + 1

    return handle


def protect_streams() -> None:
    """Give stdout and stderr the stand-in handler; it only ever sees characters that their
    encoding lacks, so UTF-8 output is unchanged."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)  # None: closed, or not a text file
        original = getattr(stream, "errors", None) or "strict"
        if reconfigure is None or original.startswith(ERRORS):
            continue
        name = f"{ERRORS}.{original}"
        try:
            codecs.lookup_error(name)
        except LookupError:
            codecs.register_error(name, _handler(original))
        reconfigure(errors=name)
