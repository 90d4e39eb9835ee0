#!/usr/bin/python3 -I
"""hpchub-slurm: the Slurm commands of JupyterHub's notebook jobs, run as the job's owner.

The JupyterHub account may run this helper (and hpchub-auth) through sudo, as root, and
nothing else (/etc/sudoers.d/hpchub-jupyterhub). It accepts exactly:

    hpchub-slurm submit USER         (batch script on stdin)  sbatch --parsable
    hpchub-slurm query  USER JOBID                            squeue -h -j JOBID -o %T|%B|%r
    hpchub-slurm final  USER JOBID                            squeue -h -t all -j JOBID -o %T|%r
    hpchub-slurm cancel USER JOBID                            scancel JOBID
    hpchub-slurm jobs                (no arguments)           squeue, as root: see below

`jobs` is the hub's one view of the cluster: a single squeue for every notebook job of the
hub, instead of one query per server. It runs squeue as root (under Slurm's PrivateData a
user sees only their own jobs; the hub must see all of its own) with fixed options, and
prints only the hub's jobs: those named `jupyter-<hub_name>-...` (hub_name from the
configuration file) whose owner passes the same account checks as USER below. One line
per job: JOBID|USER|STATE|BATCHHOST|REASON|START|END (finished jobs too, while Slurm keeps
them). START and END are Unix times (SLURM_TIME_FORMAT=%s): the actual or expected start
(what `squeue --start` shows for a pending job, when the scheduler has one; else N/A) and
the end (start + time limit).

Checked here at every call, whoever the caller: USER is a plain POSIX name of an existing
account (resolved now, so accounts created after deployment are covered) with a uid of at
least min_uid and, when allowed groups are configured, a member of one of them; JOBID is
digits only. The helper then becomes USER (initgroups, setgid, setuid, and checks that it
cannot become root again), builds a new environment from the passwd entry (PATH, HOME,
USER, LOGNAME, SHELL, LANG=C.UTF-8; nothing from the caller), enters the home directory
and executes the fixed Slurm command from slurm_bin_dir. A refusal prints one line on
stderr and exits with status 2; otherwise the exit status is Slurm's.

Its configuration, /etc/hpchub/helpers.json (shared with hpchub-auth, rendered by the
jupyterhub role), must be owned by root and writable by nobody else:
    {"min_uid": 1000, "allowed_groups": ["hpcusers"], "slurm_bin_dir": "/usr/bin", ...}
"""

import grp
import json
import os
import pwd
import re
import stat
import subprocess
import sys

CONFIG_PATH = "/etc/hpchub/helpers.json"
USAGE = "usage: hpchub-slurm submit USER | {query,final,cancel} USER JOBID | jobs"
POSIX_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
JOB_ID = re.compile(r"[0-9]{1,12}")
SAFE_PATH = re.compile(r"/[A-Za-z0-9_.,+@%/-]*")
HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # the hub settings' name pattern
# Never a person: nobody, and (uid_t)-1 / -2 in 16 and 32 bits.
NEVER_UIDS = frozenset({65534, 65535, 4294967294, 4294967295})
# Each verb: the Slurm program and its arguments; None stands for JOBID.
COMMANDS = {
    "submit": ("sbatch", ("--parsable",)),
    "query": ("squeue", ("-h", "-j", None, "-o", "%T|%B|%r")),
    "final": ("squeue", ("-h", "-t", "all", "-j", None, "-o", "%T|%r")),
    "cancel": ("scancel", (None,)),
}
# `jobs`: all jobs Slurm still knows (-t all: finished ones while MinJobAge keeps them; -a:
# hidden partitions too), one line each; the job name comes last (it may contain "|").
# %S/%e: start (expected, for a pending job) and end, as Unix times (JOBS_ENV).
JOBS_COMMAND = ("squeue", ("-h", "-a", "-t", "all", "-o", "%i|%U|%T|%B|%r|%S|%e|%j"))
JOBS_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/", "SLURM_TIME_FORMAT": "%s"}
TIME_FIELD = re.compile(r"[0-9]{1,12}|N/A|Unknown|NONE|None")
JOBS_TIMEOUT = 60  # seconds; squeue's own retries against a controller that is down


class Refused(Exception):
    """A request this helper does not carry out; the message is one line for the caller."""


def shown(value: str) -> str:
    """A caller's argument, safe and short enough for a one-line message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_args(args: list[str]) -> tuple[str, str | None, str | None]:
    """(verb, user or None, job id or None) from the arguments after the program name."""
    if args and args[0] == "jobs":
        if len(args) != 1:
            raise Refused(f"jobs takes no arguments, got {len(args) - 1}; {USAGE}")
        return "jobs", None, None
    if not args or args[0] not in COMMANDS:
        raise Refused(USAGE)
    verb = args[0]
    wanted = 1 if verb == "submit" else 2
    if len(args) - 1 != wanted:
        raise Refused(f"{verb} takes {wanted} argument(s), got {len(args) - 1}; {USAGE}")
    user = args[1]
    if not POSIX_NAME.fullmatch(user):
        raise Refused(f"not a plain POSIX user name: {shown(user)}")
    job_id = None
    if wanted == 2:
        job_id = args[2]
        if not JOB_ID.fullmatch(job_id):
            raise Refused(f"not a job id (digits only): {shown(job_id)}")
    return verb, user, job_id


def _check_owner(st: os.stat_result, path: str, owner: int) -> None:
    if st.st_uid != owner or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise Refused(f"{path} must be owned by uid {owner} and writable by nobody else")


def load_config(path: str = CONFIG_PATH, owner: int = 0) -> dict:
    """The helper's configuration, from a file (and folder) only `owner` can change."""
    try:
        _check_owner(os.stat(os.path.dirname(path)), os.path.dirname(path), owner)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, encoding="utf-8") as stream:
            st = os.fstat(stream.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise Refused(f"{path} is not a regular file")
            _check_owner(st, path, owner)
            data = json.load(stream)
    except OSError as e:
        raise Refused(f"cannot read {path}: {e.strerror}") from None
    except ValueError:
        raise Refused(f"{path} is not valid JSON") from None
    min_uid = data.get("min_uid") if isinstance(data, dict) else None
    groups = data.get("allowed_groups") if isinstance(data, dict) else None
    bin_dir = data.get("slurm_bin_dir") if isinstance(data, dict) else None
    if type(min_uid) is not int or min_uid < 1:
        raise Refused(f"{path}: min_uid must be an integer of at least 1")
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        raise Refused(f"{path}: allowed_groups must be a list of group names")
    if not isinstance(bin_dir, str) or not SAFE_PATH.fullmatch(bin_dir):
        raise Refused(f"{path}: slurm_bin_dir must be an absolute path")
    hub_name = data.get("hub_name")
    if hub_name is not None and not (isinstance(hub_name, str) and HUB_NAME.fullmatch(hub_name)):
        raise Refused(f"{path}: hub_name must be the hub's name (letters, digits, _.-)")
    return {
        "min_uid": min_uid,
        "allowed_groups": groups,
        "slurm_bin_dir": bin_dir,
        "hub_name": hub_name,
    }


def check_account(user: str, config: dict) -> pwd.struct_passwd:
    """The passwd entry of USER, if the hub may act for that account now."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise Refused(f"no such account: {user}") from None
    if entry.pw_name != user:
        raise Refused(f"{user} resolves to another account name ({shown(entry.pw_name)})")
    if entry.pw_uid < config["min_uid"]:
        raise Refused(f"{user}: uid {entry.pw_uid} is below min_uid {config['min_uid']}")
    if entry.pw_uid in NEVER_UIDS or entry.pw_gid == 0:
        raise Refused(f"{user}: uid {entry.pw_uid}/gid {entry.pw_gid} is not a person's")
    groups = config["allowed_groups"]
    if groups:
        allowed = set()
        for name in groups:
            try:
                allowed.add(grp.getgrnam(name).gr_gid)
            except KeyError:
                continue
        if not allowed.intersection(os.getgrouplist(user, entry.pw_gid)):
            raise Refused(f"{user} is in none of the allowed groups ({', '.join(groups)})")
    return entry


def slurm_command(config: dict, verb: str, job_id: str | None) -> list[str]:
    """The fixed Slurm command line of a verb (absolute program path first)."""
    program, args = COMMANDS[verb]
    path = os.path.join(config["slurm_bin_dir"], program)
    return [path, *(job_id if a is None else a for a in args)]


def jobs_command(config: dict) -> list[str]:
    """The fixed squeue command line of `jobs`."""
    program, args = JOBS_COMMAND
    return [os.path.join(config["slurm_bin_dir"], program), *args]


def hub_jobs(output: str, config: dict) -> list[str]:
    """The lines of `jobs`: the hub's jobs of accounts the hub may act for, nothing else.

    `output` is squeue's (JOBID|UID|STATE|BATCHHOST|REASON|START|END|NAME per line). Jobs
    with another name, a job id that is not plain digits (array or het job parts), an owner
    that check_account refuses (below min_uid, not in the allowed groups, unknown) or times
    that are not Unix times (or N/A) are dropped.
    """
    prefix = f"jupyter-{config['hub_name']}-"
    owners: dict[str, str | None] = {}
    lines = []
    for line in output.splitlines():
        fields = line.split("|", 7)
        if len(fields) != 8:
            continue
        job_id, uid, state, host, reason, start, end, name = fields
        if not name.startswith(prefix) or not JOB_ID.fullmatch(job_id) or not uid.isdigit():
            continue
        if not (TIME_FIELD.fullmatch(start) and TIME_FIELD.fullmatch(end)):
            continue
        if uid not in owners:
            owners[uid] = None
            try:
                user = pwd.getpwuid(int(uid)).pw_name
                owners[uid] = check_account(user, config).pw_name
            except (KeyError, Refused):
                pass
        user = owners[uid]
        if user is not None and int(uid) >= config["min_uid"]:
            lines.append("|".join((job_id, user, state, host, reason, start, end)))
    return lines


def run_jobs(config: dict) -> int:
    """`jobs`: squeue as root with a clean environment; print the hub's jobs only."""
    if not config["hub_name"]:
        raise Refused("jobs needs hub_name in the configuration file")
    try:
        result = subprocess.run(  # noqa: S603 - a fixed program and fixed arguments
            jobs_command(config),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=JOBS_ENV,
            cwd="/",
            timeout=JOBS_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise Refused(f"squeue did not answer within {JOBS_TIMEOUT} s") from None
    except OSError as e:
        raise Refused(f"cannot run squeue: {e.strerror}") from None
    if result.returncode != 0:
        sys.stderr.write(result.stderr.decode(errors="replace"))
        return result.returncode if result.returncode > 0 else 1
    lines = hub_jobs(result.stdout.decode(errors="replace"), config)
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


def environment(entry: pwd.struct_passwd) -> dict[str, str]:
    """The whole environment of the Slurm command: from the passwd entry, nothing else."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": entry.pw_dir,
        "USER": entry.pw_name,
        "LOGNAME": entry.pw_name,
        "SHELL": entry.pw_shell or "/bin/sh",
        "LANG": "C.UTF-8",
    }


def become(entry: pwd.struct_passwd) -> None:
    """Drop root for good: the account's groups, gid and uid, then prove it."""
    uid, gid = entry.pw_uid, entry.pw_gid
    try:
        os.initgroups(entry.pw_name, gid)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as e:
        raise Refused(f"cannot become {entry.pw_name}: {e.strerror}") from None
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise Refused(f"cannot become {entry.pw_name}: ids did not change")
    if 0 in os.getgroups():
        raise Refused(f"{entry.pw_name} is a member of group 0")
    for regain in (os.setresuid, os.setresgid):
        try:
            regain(0, 0, 0)
        except PermissionError:
            continue
        raise Refused("could regain root after dropping privileges")


def main(args: list[str] | None = None, config_path: str = CONFIG_PATH, owner: int = 0) -> int:
    args = sys.argv[1:] if args is None else args
    try:
        verb, user, job_id = parse_args(args)
        if os.geteuid() != 0:
            raise Refused("must run as root (through sudo)")
        config = load_config(config_path, owner)
        if verb == "jobs":
            return run_jobs(config)
        entry = check_account(user, config)
        argv = slurm_command(config, verb, job_id)
        env = environment(entry)
        os.umask(0o022)
        become(entry)
        try:
            os.chdir(entry.pw_dir)
        except OSError as e:
            raise Refused(f"{user}: cannot enter {entry.pw_dir}: {e.strerror}") from None
        try:
            os.execve(argv[0], argv, env)  # noqa: S606 - a fixed program, no shell
        except OSError as e:
            raise Refused(f"cannot run {argv[0]}: {e.strerror}") from None
    except Refused as e:
        print(f"hpchub-slurm: refused: {e}", file=sys.stderr)
        return 2
    return 2  # not reached: execve does not return


if __name__ == "__main__":
    sys.exit(main())
