#!/usr/bin/env python3
"""Print a meta/argument_specs.yml skeleton for a role from its defaults/main.yml.

Each variable's description is the comment line(s) above it in defaults; types are
guessed from the default value (review them). tests/unit/test_roles.py keeps the two
key sets in step afterwards.

    tools/argspec_from_defaults.py roles/ROLE "Short text" > roles/ROLE/meta/argument_specs.yml
"""

import sys
from pathlib import Path

import yaml


def comments_by_key(text: str) -> dict[str, str]:
    result, pending = {}, []
    for line in text.splitlines():
        if line.startswith("#") and not line.startswith("# ---"):
            pending.append(line.lstrip("# ").strip())
        elif line and not line[0].isspace() and ":" in line and not line.startswith("---"):
            result[line.split(":", 1)[0]] = " ".join(pending)
            pending = []
        elif not line.strip():
            pending = []
    return result


def type_of(value) -> dict:
    if isinstance(value, bool):
        return {"type": "bool"}
    if isinstance(value, int):
        return {"type": "int"}
    if isinstance(value, float):
        return {"type": "float"}
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return {"type": "list", "elements": "dict"}
        return {"type": "list", "elements": "str"}
    if isinstance(value, dict):
        return {"type": "dict"}
    return {"type": "str"}


class _IndentedDumper(yaml.SafeDumper):
    """Indent list items under their key (what yamllint and ansible-lint expect)."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def main() -> None:
    role = Path(sys.argv[1])
    short = sys.argv[2] if len(sys.argv) > 2 else f"Role {role.name}"
    text = (role / "defaults" / "main.yml").read_text()
    defaults = yaml.safe_load(text) or {}
    comments = comments_by_key(text)
    options = {}
    for key, value in defaults.items():
        options[key] = {**type_of(value), "description": comments.get(key, "") or key}
    spec = {"argument_specs": {"main": {"short_description": short, "options": options}}}
    print("---")
    print(yaml.dump(spec, Dumper=_IndentedDumper, sort_keys=False, width=110), end="")


if __name__ == "__main__":
    main()
