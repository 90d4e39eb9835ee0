#!/usr/bin/env python3
"""What hpchub release this checkout is: its version (pyproject.toml) and git commit.

The roles write this record where they deploy (the jupyterhub role to /etc/hpchub/release.json,
jupyter_env to <prefix>/hpchub-release.json), and the census reads it back (docs/census.md).
It holds no time stamp: deploying the same commit twice writes the same file.

    tools/hpchub_release.py      print {"version": ..., "commit": ..., "dirty": ...} as JSON
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def release(repo: Path = REPO) -> dict:
    """{"version", "commit", "dirty"}; commit "unknown" outside a git checkout."""
    text = (repo / "pyproject.toml").read_text()
    match = re.search(r'(?m)^version\s*=\s*"([^"]+)"', text)
    version = match.group(1) if match else "unknown"
    commit = _git("rev-parse", "HEAD") or "unknown"
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"version": version, "commit": commit, "dirty": bool(status)}


if __name__ == "__main__":
    print(json.dumps(release(), sort_keys=True))
