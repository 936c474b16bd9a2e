"""The repository passes ruff with the rules pyproject.toml selects (ruff comes with the dev extra)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_passes():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "unsloth_course", "tests", "tools",
                             *sorted(str(p) for p in (ROOT / "notebooks").glob("*.py"))],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
