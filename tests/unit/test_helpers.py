"""hpchub's two root helpers (roles/jupyterhub/files/): what they accept, and whom for.

They are the only programs the hub account may run with sudo, so every check that keeps a
compromised hub from acting as root or as a system account lives in them. The account and
group checks run against faked databases; the privilege drop runs for real in a
subprocess when the tests run as root (as in CI).
"""

from __future__ import annotations

import grp
import importlib.machinery
import importlib.util
import io
import json
import os
import pwd
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest

FILES = Path(__file__).resolve().parents[2] / "roles" / "jupyterhub" / "files"


def load_helper(name: str):
    """Import a helper by path (it has no package and is installed without .py)."""
    path = FILES / f"{name}.py"
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:  # no __pycache__ among the role's files
        loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writes_bytecode
    return module


slurm = load_helper("hpchub-slurm")
auth = load_helper("hpchub-auth")
HELPERS = {"slurm": slurm, "auth": auth}

CONFIG = {"min_uid": 1000, "allowed_groups": [], "slurm_bin_dir": "/usr/bin"}


# --- the account and group databases, as the login node would answer -----------------------


def entry(name, uid, gid=2000, home=None, shell="/bin/bash"):
    return pwd.struct_passwd((name, "x", uid, gid, "", home or f"/home/{name}", shell))


ACCOUNTS = {
    "alice": entry("alice", 2001),
    "bob": entry("bob", 2002, gid=3000),
    "root": entry("root", 0, gid=0, home="/root"),
    "daemon": entry("daemon", 1, gid=1, home="/usr/sbin"),
    "newsys": entry("newsys", 998, gid=998, home="/var/lib/newsys"),  # useradd -r, later
    "nobody": entry("nobody", 65534, gid=65534, home="/nonexistent"),
    "wheelie": entry("wheelie", 2003, gid=0),
    "mapped": entry("Mapped", 2004),  # NSS answers with another spelling
}
GROUPS = {"hpcusers": 2000, "gpu": 4000}
MEMBERSHIP = {"bob": [3000, 4000]}


def fake_databases(monkeypatch, module):
    """The helper `module` sees the accounts and groups above instead of the host's."""

    def getpwnam(name):
        return ACCOUNTS[name]

    def getpwuid(uid):
        for e in ACCOUNTS.values():
            if e.pw_uid == uid and e.pw_name != "Mapped":
                return e
        raise KeyError(uid)

    def getgrnam(name):
        return grp.struct_group((name, "x", GROUPS[name], []))

    def getgrouplist(name, gid):
        return [gid, *MEMBERSHIP.get(name, [])]

    monkeypatch.setattr(module, "pwd", types.SimpleNamespace(getpwnam=getpwnam, getpwuid=getpwuid))
    monkeypatch.setattr(module, "grp", types.SimpleNamespace(getgrnam=getgrnam))
    monkeypatch.setattr(
        module,
        "os",
        types.SimpleNamespace(**{**vars(os), "getgrouplist": getgrouplist}),
    )
    return module


@pytest.fixture(params=sorted(HELPERS))
def helper(request, monkeypatch):
    """Each helper, with the faked account and group databases."""
    return fake_databases(monkeypatch, HELPERS[request.param])


@pytest.mark.parametrize("name", ["alice", "bob"])
def test_cluster_accounts_are_accepted(helper, name):
    assert helper.check_account(name, CONFIG).pw_name == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("root", "uid 0 is below min_uid 1000"),
        ("daemon", "uid 1 is below min_uid 1000"),
        ("newsys", "uid 998 is below min_uid 1000"),
        ("nobody", "is not a person's"),
        ("wheelie", "is not a person's"),
        ("mapped", "resolves to another account name"),
        ("ghost", "no such account"),
    ],
)
def test_system_and_odd_accounts_are_refused(helper, name, reason):
    with pytest.raises(helper.Refused) as info:
        helper.check_account(name, CONFIG)
    assert reason in str(info.value)


def test_the_floor_is_the_configured_one(helper):
    assert helper.check_account("newsys", {**CONFIG, "min_uid": 500}).pw_uid == 998
    with pytest.raises(helper.Refused, match="below min_uid 2002"):
        helper.check_account("alice", {**CONFIG, "min_uid": 2002})


def test_allowed_groups_are_checked_with_primary_and_supplementary_groups(helper):
    config = {**CONFIG, "allowed_groups": ["hpcusers"]}
    assert helper.check_account("alice", config)  # primary group hpcusers
    with pytest.raises(helper.Refused, match="none of the allowed groups"):
        helper.check_account("bob", config)
    # bob is a supplementary member of gpu; a group that does not exist matches nobody.
    assert helper.check_account("bob", {**CONFIG, "allowed_groups": ["missing", "gpu"]})
    with pytest.raises(helper.Refused):
        helper.check_account("alice", {**CONFIG, "allowed_groups": ["missing"]})


# --- hpchub-slurm: its arguments and commands ----------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["submit", "alice"], ("submit", "alice", None)),
        (["query", "alice", "42"], ("query", "alice", "42")),
        (["final", "bob", "7"], ("final", "bob", "7")),
        (["cancel", "alice", "123456"], ("cancel", "alice", "123456")),
        (["submit", "_svc.x-1"], ("submit", "_svc.x-1", None)),
        (["jobs"], ("jobs", None, None)),
    ],
)
def test_slurm_helper_accepts_its_verbs(args, expected):
    assert slurm.parse_args(args) == expected


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["sbatch", "alice"],
        ["SUBMIT", "alice"],
        ["submit"],
        ["submit", "alice", "--wrap=id"],
        ["submit", "alice", "--uid=0"],
        ["submit", "alice", "42"],
        ["query", "alice"],
        ["query", "alice", "42", "-o", "%all"],
        ["query", "alice", "1;id"],
        ["query", "alice", "-1"],
        ["query", "alice", "42 "],
        ["query", "alice", "4_2"],
        ["cancel", "alice", ""],
        ["cancel", "alice", "1234567890123"],
        ["submit", "-u"],
        ["submit", "Alice"],
        ["submit", "alice\n"],
        ["submit", "alice;id"],
        ["submit", "../alice"],
        ["submit", "a" * 33],
        ["submit", ""],
        ["jobs", "alice"],
        ["jobs", "-u", "root"],
        ["jobs", "--format=%all"],
        ["jobs", ""],
        ["JOBS"],
    ],
)
def test_slurm_helper_refuses_everything_else(args):
    with pytest.raises(slurm.Refused):
        slurm.parse_args(args)


def test_slurm_commands_are_fixed():
    config = {**CONFIG, "slurm_bin_dir": "/opt/slurm/bin"}
    assert slurm.slurm_command(config, "submit", None) == ["/opt/slurm/bin/sbatch", "--parsable"]
    assert slurm.slurm_command(config, "query", "42") == [
        "/opt/slurm/bin/squeue",
        "-h",
        "-j",
        "42",
        "-o",
        "%T|%B|%r",
    ]
    assert slurm.slurm_command(config, "final", "42") == [
        "/opt/slurm/bin/squeue",
        "-h",
        "-t",
        "all",
        "-j",
        "42",
        "-o",
        "%T|%r",
    ]
    assert slurm.slurm_command(config, "cancel", "42") == ["/opt/slurm/bin/scancel", "42"]


def test_the_hub_wide_query_is_fixed():
    config = {**CONFIG, "slurm_bin_dir": "/opt/slurm/bin", "hub_name": "jhub"}
    assert slurm.jobs_command(config) == [
        "/opt/slurm/bin/squeue",
        "-h",
        "-a",
        "-t",
        "all",
        "-o",
        "%i|%U|%T|%B|%r|%S|%e|%j",
    ]


# squeue -o '%i|%U|%T|%B|%r|%S|%e|%j' as root (SLURM_TIME_FORMAT=%s): every job.
SQUEUE_ALL = """\
101|2001|RUNNING|node1|None|1700000000|1700003600|jupyter-jhub-small
102|2002|PENDING|(null)|Priority|N/A|N/A|jupyter-jhub-gpu
103|0|RUNNING|node1|None|1700000000|1700003600|jupyter-jhub-small
104|1|RUNNING|node2|None|1700000000|1700003600|jupyter-jhub-small
105|998|RUNNING|node2|None|1700000000|1700003600|jupyter-jhub-small
106|65534|RUNNING|node2|None|1700000000|1700003600|jupyter-jhub-small
107|2001|RUNNING|node2|None|1700000000|1700003600|my-own-batch-job
108|2001|RUNNING|node2|None|1700000000|1700003600|jupyter-otherhub-small
109_3|2001|RUNNING|node2|None|1700000000|1700003600|jupyter-jhub-small
110|2003|RUNNING|node2|None|1700000000|1700003600|jupyter-jhub-small
111|4242|RUNNING|node2|None|1700000000|1700003600|jupyter-jhub-small
112|2001|COMPLETED|node1|None|1700000000|1700000100|jupyter-jhub-small|with|bars
113|2001|RUNNING|node1|None|2026-11-28T07:00:00|1700003600|jupyter-jhub-small
"""


def test_the_hub_wide_query_shows_only_the_hubs_jobs_of_accounts_it_may_act_for(monkeypatch):
    fake_databases(monkeypatch, slurm)
    config = {**CONFIG, "hub_name": "jhub"}
    assert slurm.hub_jobs(SQUEUE_ALL, config) == [
        "101|alice|RUNNING|node1|None|1700000000|1700003600",
        "102|bob|PENDING|(null)|Priority|N/A|N/A",
        "112|alice|COMPLETED|node1|None|1700000000|1700000100",
    ]
    # Below the floor (root, daemon, a late system account), nobody, gid 0, an unknown uid,
    # other names, array parts, times that are not Unix times: never shown. The allowed
    # groups apply as for USER.
    assert slurm.hub_jobs(SQUEUE_ALL, {**config, "allowed_groups": ["gpu"]}) == [
        "102|bob|PENDING|(null)|Priority|N/A|N/A"
    ]
    assert slurm.hub_jobs(SQUEUE_ALL, {**config, "min_uid": 2002}) == [
        "102|bob|PENDING|(null)|Priority|N/A|N/A"
    ]


@pytest.mark.parametrize("name", ["", "../x", "a b", "x|y", 7, "-x"])
def test_hub_name_must_be_a_plain_name(tmp_path, name):
    with pytest.raises(slurm.Refused, match="hub_name"):
        slurm.load_config(
            write_config(tmp_path, {**FULL_CONFIG, "hub_name": name}), owner=os.getuid()
        )


def test_slurm_environment_comes_from_the_passwd_entry_only(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/tmp/evil.so")
    monkeypatch.setenv("SLURM_CONF", "/tmp/evil.conf")
    env = slurm.environment(ACCOUNTS["alice"])
    assert env == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/alice",
        "USER": "alice",
        "LOGNAME": "alice",
        "SHELL": "/bin/bash",
        "LANG": "C.UTF-8",
    }


def test_slurm_helper_does_not_run_unless_root(monkeypatch, capsys):
    monkeypatch.setattr(slurm, "os", types.SimpleNamespace(**{**vars(os), "geteuid": lambda: 1}))
    assert slurm.main(["query", "alice", "1"]) == 2
    assert "must run as root" in capsys.readouterr().err


def test_refusals_are_one_line_with_status_2(capsys):
    assert slurm.main(["submit", "alice", "--wrap=id"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hpchub-slurm: refused: submit takes 1 argument(s)")
    assert err.count("\n") == 1


class FakeIds:
    """os functions of a process that drops privileges, for become() without root."""

    def __init__(self, regain_works=False):
        self.ids = {"uid": (0, 0, 0), "gid": (0, 0, 0)}
        self.groups = [0]
        self.regain_works = regain_works
        self.calls = []

    def initgroups(self, name, gid):
        self.calls.append(("initgroups", name, gid))
        self.groups = [gid, 5000]

    def _set(self, kind, ids):
        if ids == (0, 0, 0) and self.ids["uid"] != (0, 0, 0) and not self.regain_works:
            raise PermissionError(1, "Operation not permitted")
        self.calls.append((f"setres{kind}", *ids))
        self.ids[kind] = ids

    def namespace(self):
        return types.SimpleNamespace(
            **{
                **vars(os),
                "initgroups": self.initgroups,
                "setresgid": lambda *ids: self._set("gid", ids),
                "setresuid": lambda *ids: self._set("uid", ids),
                "getresuid": lambda: self.ids["uid"],
                "getresgid": lambda: self.ids["gid"],
                "getgroups": lambda: list(self.groups),
            }
        )


def test_become_drops_groups_gid_then_uid(monkeypatch):
    fake = FakeIds()
    monkeypatch.setattr(slurm, "os", fake.namespace())
    slurm.become(ACCOUNTS["alice"])
    assert fake.calls == [
        ("initgroups", "alice", 2000),
        ("setresgid", 2000, 2000, 2000),
        ("setresuid", 2001, 2001, 2001),
    ]


def test_become_refuses_to_go_on_when_root_can_be_regained(monkeypatch):
    fake = FakeIds(regain_works=True)
    monkeypatch.setattr(slurm, "os", fake.namespace())
    with pytest.raises(slurm.Refused, match="regain root"):
        slurm.become(ACCOUNTS["alice"])


# --- the configuration file --------------------------------------------------------------


def write_config(folder: Path, data, mode=0o644) -> str:
    path = folder / "helpers.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    path.chmod(mode)
    return str(path)


FULL_CONFIG = {**CONFIG, "allowed_groups": ["hpcusers"], "pam_service": "login"}


@pytest.mark.parametrize("module", [slurm, auth], ids=["slurm", "auth"])
def test_configuration_is_read_from_a_file_only_its_owner_can_change(tmp_path, module):
    config = module.load_config(write_config(tmp_path, FULL_CONFIG), owner=os.getuid())
    assert config["min_uid"] == 1000 and config["allowed_groups"] == ["hpcusers"]
    errors = (module.Refused,) if module is slurm else (module.UsageError,)
    with pytest.raises(errors, match="owned by uid"):
        module.load_config(write_config(tmp_path, FULL_CONFIG), owner=os.getuid() + 1)
    with pytest.raises(errors, match="writable by nobody else"):
        module.load_config(write_config(tmp_path, FULL_CONFIG, 0o664), owner=os.getuid())
    link = tmp_path / "link.json"
    link.symlink_to(write_config(tmp_path, FULL_CONFIG))
    with pytest.raises(errors, match="cannot read"):
        module.load_config(str(link), owner=os.getuid())


@pytest.mark.parametrize("module", [slurm, auth], ids=["slurm", "auth"])
@pytest.mark.parametrize(
    "broken",
    [
        "not json",
        {**FULL_CONFIG, "min_uid": 0},
        {**FULL_CONFIG, "min_uid": True},
        {**FULL_CONFIG, "min_uid": "1000"},
        {k: v for k, v in FULL_CONFIG.items() if k != "min_uid"},
        {**FULL_CONFIG, "allowed_groups": "hpcusers"},
        {**FULL_CONFIG, "allowed_groups": [""]},
        [],
    ],
)
def test_a_broken_configuration_stops_the_helper(tmp_path, module, broken):
    errors = (module.Refused,) if module is slurm else (module.UsageError,)
    with pytest.raises(errors):
        module.load_config(write_config(tmp_path, broken), owner=os.getuid())


@pytest.mark.parametrize("bin_dir", ["usr/bin", "/usr/bin;id", "/usr/bin $(id)", 7])
def test_slurm_bin_dir_must_be_a_plain_absolute_path(tmp_path, bin_dir):
    with pytest.raises(slurm.Refused, match="slurm_bin_dir"):
        slurm.load_config(
            write_config(tmp_path, {**FULL_CONFIG, "slurm_bin_dir": bin_dir}), owner=os.getuid()
        )


@pytest.mark.parametrize("service", ["", "../login", "login other", None])
def test_pam_service_must_be_a_service_name(tmp_path, service):
    with pytest.raises(auth.UsageError, match="pam_service"):
        auth.load_config(
            write_config(tmp_path, {**FULL_CONFIG, "pam_service": service}), owner=os.getuid()
        )


# --- hpchub-slurm for real: root drops to an account and runs a fixed command -------------

STUB = """#!/bin/sh
echo "program=$0"
echo "args=$*"
echo "cwd=$(pwd)"
grep -E '^(Uid|Gid|Groups):' /proc/self/status
env | sed 's/^/env:/'
echo "stdin=$(cat)"
"""


@pytest.fixture
def fake_slurm_root():
    """A root-owned 0755 folder (readable by the test account) with stub Slurm commands
    and the helper's configuration; the configured test account is `daemon`."""
    root = Path(tempfile.mkdtemp(prefix="hpchub-helper-test-", dir="/tmp"))
    root.chmod(0o755)
    bin_dir = root / "bin"
    bin_dir.mkdir(mode=0o755)
    for program in ("sbatch", "squeue", "scancel"):
        (bin_dir / program).write_text(STUB)
        (bin_dir / program).chmod(0o755)
    daemon = pwd.getpwnam("daemon")
    config = write_config(
        root,
        {"min_uid": daemon.pw_uid, "allowed_groups": [], "slurm_bin_dir": str(bin_dir)},
    )
    yield config, daemon
    subprocess.run(["rm", "-rf", str(root)], check=True)


def run_helper(config: str, args: list[str], stdin: str = "", env: dict | None = None):
    path = str(FILES / "hpchub-slurm.py")
    code = (
        "import importlib.machinery as m, importlib.util as u, sys\n"
        f"loader = m.SourceFileLoader('helper', {path!r})\n"
        "helper = u.module_from_spec(u.spec_from_loader('helper', loader))\n"
        "loader.exec_module(helper)\n"
        f"sys.exit(helper.main({args!r}, config_path={config!r}))\n"
    )
    return subprocess.run(
        [sys.executable, "-I", "-B", "-c", code],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")


@needs_root
def test_submit_runs_sbatch_as_the_account_with_a_clean_environment(fake_slurm_root):
    config, daemon = fake_slurm_root
    hostile = {
        "PATH": "/tmp/evil:/usr/bin:/bin",
        "LD_PRELOAD": "/nonexistent/evil.so",
        "BASH_ENV": "/tmp/evil.sh",
        "SLURM_CONF": "/tmp/evil.conf",
        "SBATCH_EXPORT": "ALL",
        "JUPYTERHUB_API_TOKEN": "hub-secret",
    }
    result = run_helper(config, ["submit", "daemon"], stdin="#!/bin/bash\necho hi\n", env=hostile)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    uid, gid = daemon.pw_uid, daemon.pw_gid
    assert f"program={Path(config).parent}/bin/sbatch" in lines
    assert "args=--parsable" in lines
    assert f"cwd={daemon.pw_dir}" in lines
    # real, effective, saved and filesystem ids are the account's: root is gone for good.
    assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in lines
    assert f"Gid:\t{gid}\t{gid}\t{gid}\t{gid}" in lines
    groups = next(line for line in lines if line.startswith("Groups:")).split()[1:]
    assert "0" not in groups
    env = {line[4:].split("=", 1)[0] for line in lines if line.startswith("env:")}
    assert env <= {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "PWD", "SHLVL", "_"}
    assert "env:PATH=/usr/bin:/bin" in lines
    assert "evil" not in result.stdout and "hub-secret" not in result.stdout
    assert "stdin=#!/bin/bash" in result.stdout  # the batch script reaches sbatch


@needs_root
def test_query_and_cancel_run_their_fixed_commands(fake_slurm_root):
    config, _daemon = fake_slurm_root
    query = run_helper(config, ["query", "daemon", "42"])
    assert "args=-h -j 42 -o %T|%B|%r" in query.stdout.splitlines()
    cancel = run_helper(config, ["cancel", "daemon", "42"])
    assert "args=42" in cancel.stdout.splitlines() and "/bin/scancel" in cancel.stdout


@needs_root
def test_refused_accounts_run_nothing(fake_slurm_root):
    config, _daemon = fake_slurm_root
    for args in (["submit", "root"], ["submit", "daemon", "--uid=0"], ["query", "daemon", "1;id"]):
        result = run_helper(config, args, stdin="#!/bin/bash\n")
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr.startswith("hpchub-slurm: refused: ")


SQUEUE_STUB = """#!/bin/sh
{{ echo "args=$*"; echo "uid=$(id -u)"; env | sed 's/^/env:/'; }} > {record}
printf '%s\\n' '7|0|RUNNING|node1|None|5|9|jupyter-jhub-small' \\
  '8|{uid}|RUNNING|node2|None|5|9|jupyter-jhub-small' '9|{uid}|RUNNING|node2|None|5|9|other'
"""


@needs_root
def test_jobs_runs_squeue_as_root_with_a_clean_environment_and_filters(fake_slurm_root):
    config, daemon = fake_slurm_root
    folder = Path(config).parent
    record = folder / "record"
    (folder / "bin" / "squeue").write_text(SQUEUE_STUB.format(record=record, uid=daemon.pw_uid))
    data = json.loads(Path(config).read_text())
    write_config(folder, {**data, "hub_name": "jhub"})
    result = run_helper(config, ["jobs"], env={"PATH": "/tmp/evil", "SLURM_CONF": "/tmp/x"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["8|daemon|RUNNING|node2|None|5|9"]
    seen = record.read_text().splitlines()
    assert "args=-h -a -t all -o %i|%U|%T|%B|%r|%S|%e|%j" in seen and "uid=0" in seen
    # Times as Unix times, whatever the time zone or locale.
    assert "env:SLURM_TIME_FORMAT=%s" in seen
    assert "env:SLURM_CONF=/tmp/x" not in seen and "env:PATH=/usr/bin:/bin" in seen
    assert run_helper(config, ["jobs", "daemon"]).returncode == 2
    # Without hub_name in the configuration the helper refuses rather than show every job.
    write_config(folder, data)
    refused = run_helper(config, ["jobs"])
    assert refused.returncode == 2 and refused.stdout == "" and "hub_name" in refused.stderr


# --- hpchub-auth: its input and PAM --------------------------------------------------------


def test_credentials_come_as_two_lines():
    assert auth.read_credentials(b"alice\ns3cret pass\n") == ("alice", "s3cret pass")
    assert auth.read_credentials("alice\npässwörd\n".encode()) == ("alice", "pässwörd")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"alice\nsecret", "UsageError"),
        (b"alice\nsecret\nmore\n", "UsageError"),
        (b"alice\n", "UsageError"),
        (b"", "UsageError"),
        (b"alice\n\xff\xfe\n", "UsageError"),
        (b"alice\n" + b"x" * 5000 + b"\n", "UsageError"),
        (b"Alice\nsecret\n", "Refused"),
        (b"root;id\nsecret\n", "Refused"),
        (b"-alice\nsecret\n", "Refused"),
        (b"alice\n\n", "Refused"),
        (b"alice\nse\x00cret\n", "Refused"),
    ],
)
def test_other_input_is_refused(data, error):
    with pytest.raises(getattr(auth, error)) as info:
        auth.read_credentials(data)
    assert "secret" not in str(info.value) and "cret" not in str(info.value)


class FakePamela(types.ModuleType):
    """pamela's two functions the helper uses, recording how they were called."""

    class PAMError(Exception):
        def __init__(self, message):
            super().__init__(message)
            self.message = message

    def __init__(self, password="right", account_ok=True):
        super().__init__("pamela")
        self.password = password
        self.account_ok = account_ok
        self.calls = []

    def authenticate(self, user, password, service, resetcred):
        self.calls.append(("authenticate", user, service, resetcred))
        if password != self.password:
            raise self.PAMError("Authentication failure")

    def check_account(self, user, service):
        self.calls.append(("check_account", user, service))
        if not self.account_ok:
            raise self.PAMError("User account has expired")


def test_pam_authenticates_then_checks_the_account(monkeypatch):
    pam = FakePamela()
    monkeypatch.setitem(sys.modules, "pamela", pam)
    auth.pam_check("alice", "right", "login")
    assert pam.calls == [("authenticate", "alice", "login", 0), ("check_account", "alice", "login")]


@pytest.mark.parametrize(
    ("pam", "reason"),
    [
        (FakePamela(password="other"), "Authentication failure"),
        (FakePamela(account_ok=False), "User account has expired"),
    ],
)
def test_pam_refusals_say_why_without_the_password(monkeypatch, pam, reason):
    monkeypatch.setitem(sys.modules, "pamela", pam)
    with pytest.raises(auth.Refused) as info:
        auth.pam_check("alice", "right", "login")
    assert str(info.value) == f"alice: {reason}"


@pytest.fixture
def auth_main(tmp_path, monkeypatch):
    """hpchub-auth's main() as root would run it, with fake databases and PAM."""
    fake_databases(monkeypatch, auth)
    config = write_config(tmp_path, {**FULL_CONFIG, "allowed_groups": []})
    monkeypatch.setattr(auth.os, "geteuid", lambda: 0)
    monkeypatch.setitem(sys.modules, "pamela", FakePamela(password="right"))

    def run(args, data: bytes):
        monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(data)))
        return auth.main(args, config_path=config, owner=os.getuid())

    return run


def test_auth_exit_statuses(auth_main, capsys):
    assert auth_main([], b"alice\nright\n") == 0
    assert auth_main([], b"alice\nwrong\n") == 1
    assert auth_main([], b"root\nright\n") == 1
    assert auth_main([], b"alice\n") == 2
    assert auth_main(["alice"], b"alice\nright\n") == 2  # nothing as arguments
    err = capsys.readouterr().err
    assert "right" not in err and "wrong" not in err
    assert err.count("\n") == 4  # one line per refusal
