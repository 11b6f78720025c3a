"""The words every output shares: verdicts as inspection lines say them.

Renderers, the assistant and the CLI take their words from here, so a part that
FAILs in the terminal does not read "anomalous" in the report.
"""

from __future__ import annotations

from typing import Literal

Verdict = Literal["pass", "review", "fail"]
VERDICTS: tuple[Verdict, ...] = ("pass", "review", "fail")

VERDICT_WORDS: dict[str, str] = {"pass": "PASS", "review": "REVIEW", "fail": "FAIL"}
"""How a verdict is shown to people."""

VERDICT_MEANINGS: dict[str, str] = {
    "pass": "no anomaly found",
    "review": "uncertain: a person should look",
    "fail": "anomaly found",
}
