"""Text from outside made safe to show on a terminal: never markup, never a control sequence.

Command output, log lines, probe bodies, error messages, config keys and file names are
untrusted. The CLI's consoles never interpret markup or emoji codes (see `output.py`);
on top of that, `visible` turns every character a terminal would act on (escape sequences,
carriage returns, bidi overrides) and every unencodable lone surrogate (from undecodable
bytes) into a visible backslash escape, so what is printed is exactly what was there.
Styling is only ever applied by `styled`, to our own fixed words.
"""

from __future__ import annotations

import re

from rich.text import Text

# C0 controls but tab and newline, DEL, C1 controls, bidi embedding/override/isolate
# marks (they reorder what is shown), and lone surrogates (undecodable bytes).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with control characters and lone surrogates shown as backslash escapes."""
    return _UNSAFE.sub(_escape, text)


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line of plain parts and (text, style) parts; no part is ever parsed as markup."""
    return Text.assemble(*parts)
