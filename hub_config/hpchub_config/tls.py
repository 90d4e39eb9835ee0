"""Names in internal TLS certificates."""

from __future__ import annotations

import re


def alt_names(names) -> list[str]:
    """subjectAltName entries (DNS:/IP:) for host names and IPv4 addresses, in order, once."""
    entries: list[str] = []
    for name in names:
        kind = "IP" if re.fullmatch(r"[0-9.]+", name) else "DNS"
        if f"{kind}:{name}" not in entries:
            entries.append(f"{kind}:{name}")
    return entries
