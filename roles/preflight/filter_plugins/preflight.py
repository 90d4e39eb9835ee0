"""Filters for the preflight role: inventory validation on the Ansible controller.

They read the argument specs of all roles, find inventory variables no role declares (with a
"did you mean" suggestion), and turn validate_argument_spec results into one-line messages.
"""

from __future__ import annotations

import difflib
import glob
import os

import yaml
from ansible.errors import AnsibleFilterError


def role_options(roles_dir):
    """Map each role name to the merged options of all entry points of its argument_specs.yml.

    roles_dir: the directory holding the roles (roles/<role>/meta/argument_specs.yml).
    """
    options_by_role = {}
    for path in sorted(glob.glob(os.path.join(roles_dir, "*", "meta", "argument_specs.yml"))):
        role = os.path.basename(os.path.dirname(os.path.dirname(path)))
        try:
            with open(path, encoding="utf-8") as handle:
                document = yaml.safe_load(handle) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise AnsibleFilterError(f"cannot read the argument specs {path}: {exc}") from exc
        entry_points = document.get("argument_specs") or {}
        merged = {}
        for entry_point in entry_points.values():
            merged.update((entry_point or {}).get("options") or {})
        options_by_role[role] = merged
    return options_by_role


def unknown_variables(names, known, prefixes, retired, host):
    """Messages for variables that look like role variables but no role declares.

    names: the variable names a host has; known: all declared option names; prefixes: role
    prefixes (a variable with one of them is ours); retired: old name -> what to do instead.
    """
    known = set(known)
    problems = []
    for name in sorted(str(n) for n in names):
        if name in retired:
            problems.append(f"{name} (host {host}) is no longer supported: {retired[name]}.")
            continue
        if name in known or not any(name.startswith(prefix) for prefix in prefixes):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = (
            f" Did you mean {close[0]}?"
            if close
            else " Check the spelling against the roles' README.md files."
        )
        problems.append(f"{name} is not a known variable (host {host}).{hint}")
    return problems


def pick(mapping, keys):
    """The entries of mapping (e.g. hostvars[host]) whose key is in keys, values templated."""
    return {key: mapping[key] for key in keys if key in mapping}


def spec_errors(results):
    """One message per failed validate_argument_spec result (registered with failed_when: false)."""
    messages = []
    for result in results:
        errors = result.get("argument_errors") or []
        if not errors:
            continue
        role = result.get("item", {}).get("key", "?")
        texts = [_describe(str(error)) for error in errors]
        messages.append(f"role {role}: " + "; ".join(texts) + ".")
    return messages


def _describe(error):
    """Name the problem: validate_argument_spec words an unknown key as "<path>. Supported ..."."""
    error = error.rstrip(".")
    if "Supported parameters include" in error and not error.lower().startswith("unsupported"):
        error = "unsupported parameter " + error
    return error


class FilterModule:
    def filters(self):
        return {
            "hpchub_role_options": role_options,
            "hpchub_unknown_variables": unknown_variables,
            "hpchub_pick": pick,
            "hpchub_spec_errors": spec_errors,
        }
