#!/usr/bin/python
"""Ansible module: Slurm accounting associations (cluster, QOS, accounts, users) as declared.

Reads what slurmdbd holds with `sacctmgr -nP show ...`, compares it with the declaration and
runs `sacctmgr -i add/modify ...` for the differences only, so a second run changes nothing
and reports changed=false. Check mode computes the same commands without running them.
It adds and updates; it never deletes an account, a user or a QOS that the declaration does
not name (removing associations is a site decision: `sacctmgr delete ...` by hand).
"""

from __future__ import annotations

import re

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: slurm_associations
short_description: Declare Slurm accounting QOS, accounts and users (sacctmgr), idempotently
description:
  - Reads slurmdbd with C(sacctmgr -nP show) and applies only the differences with C(sacctmgr -i).
  - Adds and modifies; never deletes. Supports check mode (the commands are returned, not run).
options:
  cluster:
    description: The ClusterName the associations belong to (added when slurmdbd lacks it).
    type: str
    required: true
  qos:
    description: QOS entries (name plus the limits to manage; an absent limit is left alone).
    type: list
    elements: dict
    default: []
  accounts:
    description: Accounts (name, description, organization, parent, qos, default_qos).
    type: list
    elements: dict
    default: []
  users:
    description: Users (name, accounts, default_account, qos, default_qos).
    type: list
    elements: dict
    default: []
  sacctmgr:
    description: The sacctmgr program.
    type: path
    default: /usr/bin/sacctmgr
author: hpchub
"""

RETURN = r"""
commands:
  description: The sacctmgr commands run (or, in check mode, that would run).
  returned: always
  type: list
  elements: list
"""

# Declared QOS key -> (sacctmgr field to set, field to show, kind).
QOS_FIELDS = {
    "description": ("Description", "Descr", "text"),
    "priority": ("Priority", "Priority", "int"),
    "max_wall": ("MaxWall", "MaxWall", "time"),
    "max_tres_per_user": ("MaxTRESPerUser", "MaxTRESPU", "tres"),
    "max_tres_per_job": ("MaxTRESPerJob", "MaxTRES", "tres"),
    "max_jobs_per_user": ("MaxJobsPerUser", "MaxJobsPU", "int"),
    "max_submit_jobs_per_user": ("MaxSubmitJobsPerUser", "MaxSubmitPU", "int"),
    "grp_tres": ("GrpTRES", "GrpTRES", "tres"),
}


class SacctmgrError(RuntimeError):
    pass


def time_minutes(text: str) -> int | None:
    """A Slurm duration ("1-02:03:04", "04:00:00", "30") in minutes; None = no limit."""
    text = str(text).strip()
    if text in ("", "-1", "UNLIMITED", "INFINITE"):
        return None
    days = 0
    if "-" in text:
        day_text, text = text.split("-", 1)
        days = int(day_text)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:
        hours, (minutes, seconds) = 0, parts
    else:
        hours, minutes, seconds = parts[-3:]
    return days * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def normalise(kind: str, value) -> object:
    """A value as comparable between the declaration and sacctmgr's output."""
    if value is None:
        return None
    text = str(value).strip()
    if kind == "int":
        return None if text in ("", "-1") else int(text)
    if kind == "time":
        return time_minutes(text)
    if kind == "tres":
        return tuple(sorted(item.strip() for item in text.split(",") if item.strip()))
    return text


def qos_set(names) -> tuple[str, ...]:
    return tuple(sorted({n.strip() for n in names if n and n.strip()}))


def parse_rows(output: str, columns: int) -> list[list[str]]:
    rows = []
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        # -P ends no line with "|" in 22.05, but older versions did: drop one empty tail.
        if len(fields) == columns + 1 and fields[-1] == "":
            fields = fields[:-1]
        if len(fields) != columns:
            raise SacctmgrError(f"unexpected sacctmgr line: {line!r}")
        rows.append(fields)
    return rows


class Associations:
    """The state slurmdbd holds, and the commands that bring it to the declaration."""

    def __init__(self, run, cluster: str):
        self.run = run  # run(args) -> stdout; raises SacctmgrError
        self.cluster = cluster

    # --- reading -------------------------------------------------------------------------
    def clusters(self) -> set[str]:
        return {r[0] for r in parse_rows(self.run(["show", "cluster", "format=Cluster"]), 1)}

    def qos(self) -> dict[str, dict]:
        shown = [field[1] for field in QOS_FIELDS.values()]
        rows = parse_rows(
            self.run(["show", "qos", "format=Name," + ",".join(shown)]), len(shown) + 1
        )
        return {row[0]: dict(zip(QOS_FIELDS, row[1:], strict=True)) for row in rows}

    def accounts(self) -> dict[str, dict]:
        rows = parse_rows(self.run(["show", "account", "format=Account,Descr,Org"]), 3)
        return {r[0]: {"description": r[1], "organization": r[2]} for r in rows}

    def associations(self) -> list[dict]:
        rows = parse_rows(
            self.run(
                [
                    "show",
                    "association",
                    f"cluster={self.cluster}",
                    "format=Account,User,Partition,ParentName,QOS,DefaultQOS",
                ]
            ),
            6,
        )
        keys = ("account", "user", "partition", "parent", "qos", "default_qos")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def default_accounts(self) -> dict[str, str]:
        rows = parse_rows(self.run(["show", "user", "format=User,DefaultAccount"]), 2)
        return {r[0]: r[1] for r in rows}

    # --- planning ------------------------------------------------------------------------
    def plan(self, qos: list[dict], accounts: list[dict], users: list[dict]) -> list[list[str]]:
        commands: list[list[str]] = []
        cluster_missing = self.cluster not in self.clusters()
        if cluster_missing:
            commands.append(["add", "cluster", self.cluster])
        commands += self._plan_qos(qos)
        assocs = [] if cluster_missing else self.associations()
        commands += self._plan_accounts(accounts, assocs)
        commands += self._plan_users(users, assocs)
        return commands

    def _plan_qos(self, declared: list[dict]) -> list[list[str]]:
        current = self.qos()
        commands = []
        for entry in declared:
            name = entry["name"]
            have = current.get(name)
            if have is None:
                commands.append(["add", "qos", name])
                have = {}
            changes = []
            for key, (set_name, _, kind) in QOS_FIELDS.items():
                if entry.get(key) is None:
                    continue
                if normalise(kind, entry[key]) != normalise(kind, have.get(key, "")):
                    changes.append(f"{set_name}={entry[key]}")
            if changes:
                commands.append(["modify", "qos", "where", f"name={name}", "set", *changes])
        return commands

    def _plan_accounts(self, declared: list[dict], assocs: list[dict]) -> list[list[str]]:
        current = self.accounts()
        account_assocs = {a["account"]: a for a in assocs if not a["user"] and not a["partition"]}
        commands = []
        for entry in sorted(declared, key=lambda e: _depth(e, declared)):
            name = entry["name"]
            description = entry.get("description") or name
            organization = entry.get("organization") or name
            parent = entry.get("parent") or "root"
            have = account_assocs.get(name)
            if have is None:
                commands.append(
                    [
                        "add",
                        "account",
                        name,
                        f"cluster={self.cluster}",
                        f"parent={parent}",
                        f"description={description}",
                        f"organization={organization}",
                    ]
                )
                have = {"parent": parent, "qos": "", "default_qos": ""}
            else:
                info = current.get(name, {})
                changes = []
                if info.get("description") != description:
                    changes.append(f"description={description}")
                if info.get("organization") != organization:
                    changes.append(f"organization={organization}")
                if changes:
                    commands.append(["modify", "account", "where", f"name={name}", "set", *changes])
                if have["parent"] != parent:
                    commands.append(self._modify_association(name, [f"parent={parent}"]))
            changes = _qos_changes(entry, have)
            if changes:
                commands.append(self._modify_association(name, changes))
        return commands

    def _modify_association(self, account: str, changes: list[str]) -> list[str]:
        """sacctmgr's arguments to change an account's association on this cluster."""
        return [
            "modify",
            "account",
            "where",
            f"name={account}",
            f"cluster={self.cluster}",
            "set",
            *changes,
        ]

    def _plan_users(self, declared: list[dict], assocs: list[dict]) -> list[list[str]]:
        defaults = self.default_accounts()
        user_assocs = {
            (a["user"], a["account"]): a for a in assocs if a["user"] and not a["partition"]
        }
        commands = []
        for entry in declared:
            name = entry["name"]
            accounts = list(entry["accounts"])
            default_account = entry.get("default_account") or accounts[0]
            # The default account first: a new user is created with it.
            ordered = [default_account] + [a for a in accounts if a != default_account]
            for account in ordered:
                have = user_assocs.get((name, account))
                if have is None:
                    command = ["add", "user", name, f"account={account}", f"cluster={self.cluster}"]
                    if name not in defaults and account == default_account:
                        command.append(f"defaultaccount={default_account}")
                    commands.append(command)
                    have = {"qos": None, "default_qos": ""}
                changes = _qos_changes(entry, have)
                if changes:
                    commands.append(
                        [
                            "modify",
                            "user",
                            "where",
                            f"name={name}",
                            f"account={account}",
                            f"cluster={self.cluster}",
                            "set",
                            *changes,
                        ]
                    )
            if name in defaults and defaults[name] != default_account:
                commands.append(
                    [
                        "modify",
                        "user",
                        "where",
                        f"name={name}",
                        "set",
                        f"defaultaccount={default_account}",
                    ]
                )
        return commands


def _depth(entry: dict, declared: list[dict]) -> int:
    """Parents before children (the declaration is checked for cycles in preflight)."""
    by_name = {e["name"]: e for e in declared}
    depth, seen = 0, set()
    while entry.get("parent") in by_name and entry["name"] not in seen:
        seen.add(entry["name"])
        entry = by_name[entry["parent"]]
        depth += 1
    return depth


def _qos_changes(entry: dict, have: dict) -> list[str]:
    """qos=/defaultqos= settings where the declaration (when it names any) differs."""
    changes = []
    wanted = entry.get("qos")
    if wanted is not None and (
        have.get("qos") is None or qos_set(wanted) != qos_set(have["qos"].split(","))
    ):
        changes.append("qos=" + ",".join(qos_set(wanted)))
    default_qos = entry.get("default_qos")
    if default_qos is not None and default_qos != have.get("default_qos", ""):
        changes.append(f"defaultqos={default_qos}")
    return changes


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "cluster": {"type": "str", "required": True},
            "qos": {"type": "list", "elements": "dict", "default": []},
            "accounts": {"type": "list", "elements": "dict", "default": []},
            "users": {"type": "list", "elements": "dict", "default": []},
            "sacctmgr": {"type": "path", "default": "/usr/bin/sacctmgr"},
        },
        supports_check_mode=True,
    )
    sacctmgr = module.params["sacctmgr"]

    no_ops: list[list[str]] = []

    def run(args: list[str], *, change: bool = False) -> str:
        argv = [sacctmgr, "-i" if change else "-nP", *args]
        rc, out, err = module.run_command(argv, environ_update={"LANG": "C"})
        if rc != 0 and change and re.search(r"Nothing (modified|new added)", out + err):
            # The plan saw a difference that sacctmgr does not: report it, do not fail.
            no_ops.append(args)
            module.warn(f"sacctmgr changed nothing for: {' '.join(args)}")
            return out
        if rc != 0:
            raise SacctmgrError(f"{' '.join(argv)} failed (rc {rc}): {(err or out).strip()}")
        return out

    state = Associations(run, module.params["cluster"])
    commands: list[list[str]] = []
    try:
        for entry in module.params["users"]:
            if not entry.get("accounts"):
                module.fail_json(msg=f"slurm user {entry.get('name')!r} has no accounts")
        commands = state.plan(
            module.params["qos"], module.params["accounts"], module.params["users"]
        )
        if not module.check_mode:
            for command in commands:
                run(command, change=True)
                # A new cluster: the associations can only be read once it exists.
                if command[:2] == ["add", "cluster"]:
                    rest = state.plan(
                        module.params["qos"], module.params["accounts"], module.params["users"]
                    )
                    for more in rest:
                        run(more, change=True)
                    commands += rest
                    break
    except SacctmgrError as e:
        module.fail_json(msg=str(e), commands=commands)
    commands = [c for c in commands if c not in no_ops]
    module.exit_json(changed=bool(commands), commands=commands)


if __name__ == "__main__":
    main()
