"""What a test's subprocess reports: the JSON object on its last line of standard output."""

from __future__ import annotations

import json
import subprocess
from typing import Any


def last_json_line(result: subprocess.CompletedProcess[str], stderr_tail: int = 0) -> Any:
    """The JSON of ``result``'s last stdout line, once it exited 0 (else its standard error,
    the last ``stderr_tail`` characters of it when given, is the assertion's message)."""
    assert result.returncode == 0, result.stderr[-stderr_tail:] if stderr_tail else result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])
