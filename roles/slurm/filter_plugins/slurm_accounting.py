"""Filter `slurm_accounting_problems`: what is wrong with the accounting declaration and the gres.

Controller-side, pure Python: the slurm role's check_accounting.yml (run by the role and, before
any host is touched, by hpchub's preflight) asserts that the list it returns is empty. Each
message names the inventory key and says what to do. Types are checked by the argument specs;
this checks what they cannot: names, cross references (accounts of users, QOS of accounts),
defaults within their lists.
"""

from __future__ import annotations

import re

SLURM_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")  # sacctmgr stores names lower case
USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
GRES_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
GRES_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
DURATION = re.compile(r"(\d+-)?\d{1,2}(:\d{2}){0,2}|UNLIMITED|-1")
TRES = re.compile(r"[a-z]+(/[a-z0-9_:]+)?=\d+[KMGT]?(,[a-z]+(/[a-z0-9_:]+)?=\d+[KMGT]?)*")
ENFORCE = {"associations", "limits", "qos", "safe", "wckeys", "nojobs", "nosteps", "all"}
BUILTIN_QOS = {"normal"}


def _names(entries: list, key: str, pattern: re.Pattern, what: str, problems: list) -> list[str]:
    names = []
    for index, entry in enumerate(entries or []):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not pattern.fullmatch(name):
            problems.append(
                f"{key}[{index}].name is {name!r}: a {what} name must be lower-case letters, "
                "digits, _ . - (starting with a letter or digit)."
            )
            continue
        if name in names:
            problems.append(f"{key}: {name} is declared twice; merge the two entries.")
        names.append(name)
    return names


def _qos_refs(entry: dict, key: str, known: set[str], problems: list) -> None:
    qos = entry.get("qos")
    for name in qos or []:
        if name not in known:
            problems.append(
                f"{key} ({entry['name']}): QOS {name!r} is not declared in slurm_accounting_qos "
                f"(declared: {', '.join(sorted(known))})."
            )
    default = entry.get("default_qos")
    if default is not None:
        allowed = set(qos) if qos is not None else known
        if default not in allowed:
            problems.append(
                f"{key} ({entry['name']}): default_qos {default!r} is not one of its qos "
                f"({', '.join(sorted(allowed))})."
            )


def slurm_accounting_problems(values: dict) -> list[str]:
    """`values`: accounting, enforce, qos, accounts, users, and gres: {host: [entries]}."""
    problems: list[str] = []
    qos = values.get("qos") or []
    accounts = values.get("accounts") or []
    users = values.get("users") or []
    declared = [
        k
        for k, v in (
            ("slurm_accounting_qos", qos),
            ("slurm_accounting_accounts", accounts),
            ("slurm_accounting_users", users),
        )
        if v
    ]
    if declared and not values.get("accounting"):
        problems.append(
            f"{', '.join(declared)} {'is' if len(declared) == 1 else 'are'} set but "
            "slurm_accounting is false: set slurm_accounting: true (slurmdbd on the "
            "controller) or remove them."
        )
    if values.get("accounting"):
        enforce = [e.strip() for e in str(values.get("enforce") or "").split(",") if e.strip()]
        unknown = [e for e in enforce if e not in ENFORCE]
        if unknown:
            problems.append(
                f"slurm_accounting_enforce: unknown {', '.join(unknown)}; "
                f"use a comma list of {', '.join(sorted(ENFORCE))}."
            )
        if ("associations" in enforce or "all" in enforce) and not users:
            problems.append(
                "slurm_accounting_users is empty but slurm_accounting_enforce contains "
                "associations: nobody could submit a job. Declare the users (each with "
                "its accounts)."
            )

    qos_names = set(_names(qos, "slurm_accounting_qos", SLURM_NAME, "QOS", problems))
    known_qos = qos_names | BUILTIN_QOS
    for index, entry in enumerate(qos):
        for field in ("max_wall",):
            value = entry.get(field)
            if value is not None and not DURATION.fullmatch(str(value)):
                problems.append(
                    f"slurm_accounting_qos[{index}].{field} is {value!r}: use a quoted duration "
                    'such as "04:00:00" or "1-00:00:00".'
                )
        for field in ("max_tres_per_user", "max_tres_per_job", "grp_tres"):
            value = entry.get(field)
            if value is not None and not TRES.fullmatch(str(value)):
                problems.append(
                    f"slurm_accounting_qos[{index}].{field} is {value!r}: use TRES such as "
                    '"cpu=4,mem=8G,gres/gpu=1".'
                )

    account_names = set(
        _names(accounts, "slurm_accounting_accounts", SLURM_NAME, "account", problems)
    )
    parents = {}
    for entry in accounts:
        if not isinstance(entry, dict) or entry.get("name") not in account_names:
            continue
        parent = entry.get("parent") or "root"
        parents[entry["name"]] = parent
        if parent != "root" and parent not in account_names:
            problems.append(
                f"slurm_accounting_accounts ({entry['name']}): parent {parent!r} is not declared; "
                "declare it or use root."
            )
        _qos_refs(entry, "slurm_accounting_accounts", known_qos, problems)
    for name in parents:
        seen, current = set(), name
        while current in parents and current not in seen:
            seen.add(current)
            current = parents[current]
        if current in seen:
            problems.append(
                f"slurm_accounting_accounts: {name} is its own ancestor (parent cycle)."
            )

    _names(users, "slurm_accounting_users", USER_NAME, "user", problems)
    for entry in users:
        if not isinstance(entry, dict) or not entry.get("name"):
            continue
        own = entry.get("accounts") or []
        if not own:
            problems.append(
                f"slurm_accounting_users ({entry['name']}): accounts is empty; give the user at "
                "least one account."
            )
        for account in own:
            if account not in account_names:
                problems.append(
                    f"slurm_accounting_users ({entry['name']}): account {account!r} is not "
                    f"declared in slurm_accounting_accounts ({', '.join(sorted(account_names))})."
                )
        default = entry.get("default_account")
        if default is not None and default not in own:
            problems.append(
                f"slurm_accounting_users ({entry['name']}): default_account {default!r} is not one "
                f"of its accounts ({', '.join(own)})."
            )
        _qos_refs(entry, "slurm_accounting_users", known_qos, problems)

    for host, entries in sorted((values.get("gres") or {}).items()):
        for index, entry in enumerate(entries or []):
            where = f"slurm_node_gres[{index}] of host {host}"
            if not GRES_NAME.fullmatch(str(entry.get("name", ""))):
                problems.append(
                    f"{where}: name {entry.get('name')!r} is not a gres name (e.g. gpu)."
                )
            if entry.get("type") is not None and not GRES_TYPE.fullmatch(str(entry["type"])):
                problems.append(f"{where}: type {entry['type']!r} is not a plain name (e.g. a100).")
            count = entry.get("count")
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                problems.append(f"{where}: count {count!r} must be a whole number of at least 1.")
            if entry.get("name") == "gpu" and not entry.get("file"):
                problems.append(
                    f"{where}: a gpu needs file (its device files, e.g. /dev/nvidia[0-1]): "
                    "slurmd drops a GPU without one and the node becomes INVAL. Without "
                    'hardware, point them at existing devices, e.g. "/dev/null,/dev/zero".'
                )
        if entries and "Gres" in (values.get("extra") or {}).get(host, {}):
            problems.append(
                f"host {host} sets both slurm_node_gres and Gres in slurm_node_extra: keep "
                "slurm_node_gres only (it writes Gres= and gres.conf)."
            )
    return problems


class FilterModule:
    def filters(self):
        return {"slurm_accounting_problems": slurm_accounting_problems}
