"""Text cells that a spreadsheet will not run: every CSV clip-gaze writes passes its text through here.

Excel, LibreOffice and Google Sheets read a cell beginning with `=`, `+`, `-` or `@` (and, in some,
a tab or carriage return before one) as a formula: an `external_id` of
`=HYPERLINK("http://evil.example/","click")` would become a live link. OWASP's rule is followed:
such a cell is written with a `'` before it, which the spreadsheet shows as text and hides. Numbers
are written as numbers (a negative cosine stays -0.12); only text is changed, and only there.
"""

from __future__ import annotations

import re
from typing import Any

FORMULA_PATTERN = "^[=+\\-@\t\r]"  # a regular expression, for Arrow's compute functions too
_FORMULA = re.compile(FORMULA_PATTERN)


def safe_cell(value: Any) -> Any:
    """`value`, with `'` before it when it is text a spreadsheet would read as a formula."""
    if isinstance(value, str) and _FORMULA.match(value):
        return "'" + value
    return value


__all__ = ["FORMULA_PATTERN", "safe_cell"]
