"""Day two on the testbed: upgrade a running hub, then lose the login node and restore it.

One scenario, in order (the tests share its state; `make test-upgrade` runs it with -x on a
fresh testbed):

1. deploy an earlier hpchub (UPGRADE_FROM, a commit of main: CI's clone has the history);
   alice and bob log in, start servers, and leave a kernel each holding a value;
2. their database is set one real JupyterHub schema revision back (alembic downgrade: the
   schema of the JupyterHub before 6.x), as an earlier release's JupyterHub would have left it;
3. converge this tree: the role backs the database up and migrates it; secrets, certificates and
   tokens are unchanged; both servers, the SAME kernels (same pid, same value) and the users'
   login cookies still work; a second converge changes nothing;
4. back the hub up (playbooks/backup.yml), remove the login node's container, recreate and
   converge it (a new hub, new secrets), restore (playbooks/restore.yml): the same users, their
   tokens, the announcement and both running servers with their kernels are back;
5. the login node then runs a hand-rolled hub instead (root units, a root-owned database, a
   world-readable old secret, JupyterHub running as root): the play stops before changing
   anything and says what it found; with jupyterhub_adopt_existing_hub it takes the hub over
   (users, tokens and logins kept) and a new server starts.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from testbed.hubclient import HubUser, load_access, node_exec, slurm_jobs
from testbed.topology import LOGIN, REPO

# hpchub as merged on 2026-11-28 with the census (issue 11 item 1): the first release that
# records itself in /etc/hpchub/release.json. Any earlier commit of main works the same way.
UPGRADE_FROM = "7f3deb315cc4067bd01d097f902538515500c437"
OLD_TREE = REPO / ".cache" / "upgrade-from"
STATE = "/var/lib/jupyterhub"
VENV = "/opt/jupyterhub/venv"
DB_BACKUPS = f"{STATE}/db-backups"
BACKUPS = REPO / ".backups"
# What must survive an upgrade and a restore byte for byte (files; folders: every file inside),
# except what JupyterHub makes anew at every start: the leaf certificate of the services it runs
# (internal-tls/user-service/, signed by the unchanged services CA) and certipy's record of it.
EPHEMERAL = re.compile(r"/internal-tls/(user-service/|certipy\.json$)")
PRESERVED = [
    "/etc/jupyterhub/secrets",
    f"{STATE}/jupyterhub_cookie_secret",
    f"{STATE}/announcement_cookie_secret",
    "/etc/jupyterhub/tls/hub.crt",
    f"{STATE}/internal-tls",
]

scenario: dict = {}


def site_cluster() -> dict:
    """The cluster's description in this tree's testbed inventory, which the earlier release is
    deployed with too. A site keeps its inventory when it upgrades hpchub; the testbed's lives in
    the repository and its declared node sizes changed since UPGRADE_FROM (8 CPUs then), and Slurm
    aborts running jobs when the cores of their nodes change: the cluster changing, not hpchub."""
    cluster = yaml.safe_load(
        (REPO / "inventories" / "testbed" / "group_vars" / "all" / "cluster.yml").read_text()
    )
    return {key: cluster[key] for key in ("slurm_node_cpus", "slurm_node_memory_mb")}


def run_playbook(
    playbook: str, tree: Path = REPO, *args: str, wait: bool = True, fails: bool = False
) -> str:
    """ansible-playbook from a checkout (its own ansible.cfg and testbed inventory); then waits for
    the hub through the proxy unless told not to. With `fails`, the play must fail."""
    started = time.monotonic()
    result = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "ansible-playbook"),
            "-i",
            str(tree / "inventories" / "testbed" / "hosts.yml"),
            str(tree / "playbooks" / playbook),
            *args,
        ],
        cwd=tree,
        env={**os.environ, "ANSIBLE_CONFIG": str(tree / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    seconds = scenario.setdefault("seconds", {})
    runs = sum(key.startswith(f"{tree.name}:{playbook}") for key in seconds)
    seconds[f"{tree.name}:{playbook}" + (f"#{runs + 1}" if runs else "")] = round(
        time.monotonic() - started
    )
    if fails:
        assert result.returncode != 0, f"{playbook} should have failed:\n{result.stdout[-3000:]}"
        return result.stdout
    assert result.returncode == 0, f"{playbook} failed:\n{result.stdout[-6000:]}\n{result.stderr}"
    if wait:
        wait_hub_through_the_proxy()
    return result.stdout


def wait_hub_through_the_proxy(timeout: float = 120) -> None:
    """The play waits for the hub's API on its own port; users go through the proxy, whose route
    to the hub the hub adds once it runs (until then the proxy answers 404)."""
    access = load_access()
    session = requests.Session()
    session.trust_env = False
    deadline, status = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            status = session.get(
                f"{access['hub_url']}/hub/api/", verify=access["ca_cert"], timeout=10
            ).status_code
        except requests.RequestException as e:
            status = str(e)
        if status == 200:
            return
        time.sleep(1)
    raise AssertionError(f"the hub did not answer through the proxy within {timeout} s: {status}")


def changed_counts(output: str) -> dict[str, int]:
    recap = output[output.rindex("PLAY RECAP") :]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\S+)\s+:.*?changed=(\d+)", recap, re.M)}


def fingerprints() -> dict[str, str]:
    """sha256, mode and owner of every preserved file on the login node."""
    out = node_exec(
        LOGIN,
        f"find {' '.join(PRESERVED)} -type f 2>/dev/null | sort | while read -r f; do "
        'echo "$f $(stat -c "%a %U" "$f") $(sha256sum < "$f" | cut -c1-64)"; done',
    )
    pairs = (line.split(" ", 1) for line in out.splitlines())
    return {path: print_ for path, print_ in pairs if not EPHEMERAL.search(path)}


DB_REVISION = (
    "import sqlite3, sys; "
    "db = sqlite3.connect(sys.argv[1]); "
    "print(db.execute('SELECT version_num FROM alembic_version').fetchone()[0])"
)


def db_revision() -> str:
    return node_exec(LOGIN, f'python3 -c "{DB_REVISION}" {STATE}/jupyterhub.sqlite').strip()


def release() -> dict:
    return json.loads(node_exec(LOGIN, "cat /etc/hpchub/release.json"))


def logged_in(access: dict, name: str, password: str) -> HubUser:
    user = HubUser(access, name, password)
    response = user.login()
    assert response.status_code == 200 and "/hub/login" not in response.url, name
    user.create_token(note="upgrade scenario")
    return user


def cookie_still_logged_in(user: HubUser) -> bool:
    """The hub's home page with the browser cookie only (no token): no way back to /hub/login."""
    page = user.session.get(f"{user.base}/hub/home", timeout=30, allow_redirects=False)
    return page.status_code == 200


def start_kernel_with_state(user: HubUser) -> dict:
    kernel = user.server_api("POST", "api/kernels", json={"name": "python3"})
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]
    value = uuid.uuid4().hex
    pid = user._execute(kernel_id, f"import os\nkept = {value!r}\nprint(os.getpid())", 90).strip()
    return {"id": kernel_id, "value": value, "pid": pid}


def assert_same_kernel(user: HubUser, kernel: dict) -> None:
    """The kernel started before is alive: same id, same process, its variable still set."""
    listed = user.server_api("GET", f"api/kernels/{kernel['id']}")
    assert listed.status_code == 200, f"{user.name}'s kernel is gone: {listed.status_code}"
    out = user._execute(kernel["id"], "print(os.getpid(), kept)", 90).split()
    assert out == [kernel["pid"], kernel["value"]], f"{user.name}'s kernel lost its state: {out}"


def assert_servers_back(users: dict[str, HubUser], kernels: dict, jobs: dict) -> None:
    for name, user in users.items():
        model = user.server_model()
        assert model and model["ready"], f"{name}'s server is not ready: {model}"
        user.wait_reachable(timeout=60)
        assert_same_kernel(user, kernels[name])
        running = [j.job_id for j in slurm_jobs(name) if j.state == "RUNNING"]
        assert running == [jobs[name]], f"{name}: jobs {running}, expected {jobs[name]}"


# --- 1. an earlier release, two users with running kernels -------------------------------------


def test_earlier_release_deploys_from_the_history():
    subprocess.run(["rm", "-rf", str(OLD_TREE)], check=True)
    subprocess.run(
        ["git", "-c", "advice.detachedHead=false", "clone", "--quiet", str(REPO), str(OLD_TREE)],
        check=True,
    )
    subprocess.run(
        ["git", "-C", str(OLD_TREE), "checkout", "--quiet", "--detach", UPGRADE_FROM], check=True
    )
    # The same testbed credentials (munge key, passwords) and access.json as this tree's.
    (OLD_TREE / ".testbed").symlink_to(REPO / ".testbed")
    run_playbook("testbed.yml", OLD_TREE, "-e", json.dumps(site_cluster()))
    assert release()["commit"] == UPGRADE_FROM


def test_users_start_servers_and_kernels_on_the_earlier_release():
    access = load_access()
    users = {
        u["name"]: logged_in(access, u["name"], u["password"])
        for u in access["users"]
        if u["name"] in ("alice", "bob")
    }
    admin = logged_in(access, access["admin"]["name"], access["admin"]["password"])
    for user in users.values():
        user.start_server({"profile": "small"})
    kernels = {name: start_kernel_with_state(user) for name, user in users.items()}
    jobs = {}
    for name in users:
        (job,) = [j for j in slurm_jobs(name) if j.state == "RUNNING"]
        jobs[name] = job.job_id
    scenario.update(users=users, admin=admin, kernels=kernels, jobs=jobs, access=access)
    scenario["fingerprints"] = fingerprints()
    assert len(scenario["fingerprints"]) >= 10  # secrets, certificates, internal CAs and keys


def test_database_of_an_earlier_jupyterhub():
    """One real schema revision back, with JupyterHub's own migrations (hub stopped for it)."""
    head = db_revision()
    node_exec(LOGIN, "systemctl stop jupyterhub")
    node_exec(
        LOGIN,
        f"cd {STATE} && runuser -u jupyterhub -- env PATH={VENV}/bin:/usr/bin:/bin "
        f"{VENV}/bin/python -m jupyterhub.dbutil alembic downgrade -1",
    )
    scenario["head"], scenario["old_revision"] = head, db_revision()
    assert scenario["old_revision"] != head


# --- 2. the upgrade ------------------------------------------------------------------------------


def test_upgrade_migrates_the_database_after_a_backup():
    backups_before = node_exec(LOGIN, f"ls {DB_BACKUPS} 2>/dev/null || true").split()
    output = run_playbook("testbed.yml")
    scenario["upgrade_output"] = output
    assert db_revision() == scenario["head"]
    backups = sorted(set(node_exec(LOGIN, f"ls {DB_BACKUPS}").split()) - set(backups_before))
    assert len(backups) == 1 and backups[0].endswith(f"-{scenario['old_revision']}.sqlite")
    mode = node_exec(LOGIN, f"stat -c '%a %U' {DB_BACKUPS}/{backups[0]}").strip()
    assert mode == "600 jupyterhub"
    assert (
        release()["commit"]
        == subprocess.check_output(["git", "-C", str(REPO), "rev-parse", "HEAD"], text=True).strip()
    )


def test_upgrade_keeps_secrets_and_certificates():
    after = fingerprints()
    changed = {p for p in scenario["fingerprints"] if scenario["fingerprints"][p] != after.get(p)}
    assert not changed, f"changed by the upgrade: {sorted(changed)}"


def test_upgrade_keeps_servers_kernels_tokens_and_logins():
    users = scenario["users"]
    assert_servers_back(users, scenario["kernels"], scenario["jobs"])
    for name, user in users.items():
        assert user.api("GET", "/user").json()["name"] == name  # the token from before
        assert cookie_still_logged_in(user), f"{name} was logged out by the upgrade"


def test_second_converge_after_the_upgrade_changes_nothing():
    changed = changed_counts(run_playbook("testbed.yml"))
    assert changed and not any(changed.values()), changed


# --- 3. backup, a rebuilt login node, restore ----------------------------------------------------


def test_backup_lands_on_the_controller_with_a_manifest_and_no_secret_in_the_log():
    admin = scenario["admin"]
    # An announcement posted through the service (as test_announcements does), to be restored.
    page = admin.session.get(f"{admin.service('announcement')}/", timeout=30)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    text = f"Restored from backup ({uuid.uuid4().hex[:6]})"
    posted = admin.session.post(
        f"{admin.service('announcement')}/update",
        data={"announcement": text, "_xsrf": xsrf},
        timeout=30,
    )
    assert posted.status_code == 200
    scenario["announcement"] = text

    # What the restore must bring back: the state at backup time (the upgrade added secrets the
    # earlier release did not have, e.g. the metrics token).
    scenario["fingerprints_at_backup"] = fingerprints()
    output = run_playbook("backup.yml")
    folders = sorted((BACKUPS / LOGIN).iterdir())
    backup = folders[-1]
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["hpchub"] == release()
    assert manifest["database"]["revision"] == scenario["head"]
    for entry in (manifest["archive"], manifest["database"]):
        path = backup / entry["file"]
        sha = subprocess.check_output(["sha256sum", str(path)], text=True).split()[0]
        assert sha == entry["sha256"]
        assert path.stat().st_mode & 0o777 == 0o600
    assert backup.stat().st_mode & 0o777 == 0o700
    assert {p["category"] for p in manifest["archive"]["paths"]} == {
        "secrets",
        "certificates",
        "announcements",
    }
    secrets = node_exec(
        LOGIN, f"cat /etc/jupyterhub/secrets/proxy_auth_token {STATE}/jupyterhub_cookie_secret"
    ).split()
    assert secrets and not any(s in output for s in secrets)
    scenario["backup"] = backup


def test_restore_onto_a_rebuilt_login_node():
    hub_ca = (REPO / ".testbed" / "hub-ca.crt").read_bytes()
    testbed = str(REPO / "tools" / "testbed.sh")
    started = time.monotonic()
    subprocess.run([testbed, "compose", "rm", "--stop", "--force", LOGIN], check=True)
    subprocess.run([testbed, "up"], check=True)
    fresh = fingerprints()
    assert fresh == {}, "the recreated login node still has the hub's files"
    run_playbook("testbed.yml")
    rebuilt = fingerprints()
    assert (
        rebuilt[f"{STATE}/jupyterhub_cookie_secret"]
        != (scenario["fingerprints"][f"{STATE}/jupyterhub_cookie_secret"])
    ), "the rebuilt node should have made a new cookie secret"

    # The hub serves the certificate from before again: the testbed's clients (.testbed/hub-ca.crt,
    # which the rebuilt node's converge replaced with its new one) trust it again.
    output = run_playbook("restore.yml", wait=False)
    served = node_exec(LOGIN, "cat /etc/jupyterhub/tls/hub.crt").encode()
    assert served == hub_ca
    (REPO / ".testbed" / "hub-ca.crt").write_bytes(hub_ca)
    wait_hub_through_the_proxy()
    scenario["seconds"]["rebuild+converge+restore"] = round(time.monotonic() - started)
    assert fingerprints() == scenario["fingerprints_at_backup"]
    secrets = node_exec(LOGIN, f"cat {STATE}/jupyterhub_cookie_secret").split()
    assert not any(s in output for s in secrets)


def test_restored_hub_has_the_users_tokens_announcement_and_running_servers():
    users, admin = scenario["users"], scenario["admin"]
    names = {u["name"] for u in admin.api("GET", "/users").json()}
    assert {"alice", "bob", admin.name} <= names
    for name, user in users.items():
        assert user.api("GET", "/user").json()["name"] == name  # tokens from before the loss
    latest = admin.session.get(f"{admin.service('announcement')}/latest", timeout=30)
    assert latest.json()["announcement"] == scenario["announcement"]
    assert_servers_back(users, scenario["kernels"], scenario["jobs"])


# --- 5. adopting a hand-rolled hub -------------------------------------------------------------

HAND_ROLLED_UNIT = """[Unit]
Description=JupyterHub
After=network.target

[Service]
WorkingDirectory=/var/lib/jupyterhub
ExecStart=/opt/jupyterhub/venv/bin/jupyterhub -f /etc/jupyterhub/jupyterhub_config.py

[Install]
WantedBy=multi-user.target
"""
# What such sites run: JupyterHub as root, PAM, its own proxy, state in /var/lib/jupyterhub.
HAND_ROLLED_CONFIG = """c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = 8000
c.JupyterHub.db_url = "sqlite:////var/lib/jupyterhub/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/var/lib/jupyterhub/jupyterhub_cookie_secret"
c.JupyterHub.cleanup_servers = False
c.ConfigurableHTTPProxy.command = ["/usr/bin/configurable-http-proxy"]
"""
OLD_HUB_ANSWERS = (
    'python3 -c "import urllib.request as u; '
    "print(u.urlopen('http://127.0.0.1:8000/hub/api/', timeout=3).status)\" 2>/dev/null || true"
)
OLD_HUB_FILES = (
    "sha256sum /etc/systemd/system/jupyterhub.service /etc/jupyterhub/jupyterhub_config.py "
    f"/etc/jupyterhub/announcement_cookie_secret; stat -c '%U %a' {STATE}/jupyterhub.sqlite"
)
ADOPT = json.dumps({"jupyterhub_adopt_existing_hub": True})


def test_a_hand_rolled_hub_stops_the_play_before_any_change():
    users = scenario["users"]
    for user in users.values():
        user.stop_server()
    node_exec(LOGIN, "systemctl stop jupyterhub jupyterhub-proxy")
    node_exec(
        LOGIN,
        f"printf '%s' {shlex.quote(HAND_ROLLED_UNIT)} > /etc/systemd/system/jupyterhub.service && "
        f"printf '%s' {shlex.quote(HAND_ROLLED_CONFIG)} > /etc/jupyterhub/jupyterhub_config.py && "
        "rm -f /etc/systemd/system/jupyterhub-proxy.service && "
        f"chown root:root {STATE}/jupyterhub.sqlite && chmod 0644 {STATE}/jupyterhub.sqlite && "
        "openssl rand -hex 32 > /etc/jupyterhub/announcement_cookie_secret && "
        "chmod 0644 /etc/jupyterhub/announcement_cookie_secret && "
        "systemctl daemon-reload && systemctl enable --now jupyterhub",
    )
    deadline = time.monotonic() + 120
    while node_exec(LOGIN, OLD_HUB_ANSWERS).strip() != "200":
        assert time.monotonic() < deadline, node_exec(
            LOGIN, "journalctl -u jupyterhub -n 30 --no-pager"
        )
        time.sleep(2)
    before = node_exec(LOGIN, OLD_HUB_FILES)

    output = run_playbook("hub.yml", REPO, "--limit", LOGIN, fails=True)
    said = output[output.index("runs a JupyterHub that hpchub did not install") :]
    for expected in (
        "jupyterhub.service (/etc/systemd/system/jupyterhub.service) was not installed by hpchub",
        "as root",
        f"the hub database {STATE}/jupyterhub.sqlite belongs to root",
        "/etc/jupyterhub/announcement_cookie_secret is readable by every user (mode 0644)",
        "Nothing was changed",
        "jupyterhub_adopt_existing_hub: true",
    ):
        assert expected in said, f"{expected!r} not in:\n{said[:3000]}"
    # Nothing changed: the old hub still runs, its files as they were.
    assert node_exec(LOGIN, OLD_HUB_ANSWERS).strip() == "200"
    assert node_exec(LOGIN, OLD_HUB_FILES) == before


def test_adopting_the_hand_rolled_hub_keeps_users_tokens_and_logins():
    output = run_playbook("testbed.yml", REPO, "-e", ADOPT)
    assert "Took over the hand-rolled hub" in output
    # hpchub's units, its unprivileged hub; the old root hub is gone.
    assert "JupyterHub (hpchub)" in node_exec(LOGIN, "cat /etc/systemd/system/jupyterhub.service")
    assert node_exec(LOGIN, "systemctl show -p User --value jupyterhub").strip() == "jupyterhub"
    assert node_exec(LOGIN, OLD_HUB_ANSWERS).strip() == ""
    assert node_exec(LOGIN, f"stat -c '%U %a' {STATE}/jupyterhub.sqlite").strip() == (
        "jupyterhub 600"
    )
    # The old hub's files are out of the hub's folders, kept for the admin, root-only.
    node_exec(LOGIN, "test ! -e /etc/jupyterhub/announcement_cookie_secret")
    archives = node_exec(LOGIN, "ls -d /var/lib/hpchub-adopted/*").split()
    assert len(archives) == 1
    assert node_exec(LOGIN, f"stat -c '%U %a' {archives[0]}").strip() == "root 700"
    node_exec(LOGIN, f"test -s {archives[0]}/etc/jupyterhub/announcement_cookie_secret")
    # Users, their API tokens and their browser logins carried over; a new server starts.
    users, admin = scenario["users"], scenario["admin"]
    names = {u["name"] for u in admin.api("GET", "/users").json()}
    assert {"alice", "bob", admin.name} <= names
    for name, user in users.items():
        assert user.api("GET", "/user").json()["name"] == name
        assert cookie_still_logged_in(user), f"{name} was logged out by the adoption"
    users["alice"].start_server({"profile": "small"})
    users["alice"].wait_reachable(timeout=60)


@pytest.fixture(scope="module", autouse=True)
def _report_and_clean_up():
    yield
    for user in scenario.get("users", {}).values():
        try:
            user.stop_server()
        except Exception as e:  # noqa: BLE001 - clean-up after a failure: report, carry on
            print(f"stopping {user.name}'s server: {e}")
    subprocess.run(["rm", "-rf", str(OLD_TREE)], check=False)
    print("upgrade scenario seconds:", json.dumps(scenario.get("seconds", {})))
