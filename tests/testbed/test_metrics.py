"""Metrics: a real Prometheus (Debian's package, on the controller node) scrapes /hub/metrics.

Its token may read the metrics and nothing else; it listens on the loopback only; hpchub's
alert rules are loaded and pass their own promtool tests; a stopped hub shows as down.
"""

from __future__ import annotations

import json
import shlex
import time

import pytest
import requests

from .hubclient import node_exec
from .test_hub_restarts import wait_hub_api
from .topology import CONTROLLER, LOGIN

pytestmark = pytest.mark.testbed

PROMETHEUS = "http://127.0.0.1:9090"
TOKEN_FILE = "/etc/prometheus/hpchub-metrics.token"
RULES = "/etc/prometheus/rules"


# GET a URL and print the body, or "ERROR <reason>" (the nodes have python3, not curl).
FETCH = r"""
import sys, urllib.parse, urllib.request
url = sys.argv[1]
if len(sys.argv) > 2:
    url += "?" + urllib.parse.urlencode({"query": sys.argv[2]})
try:
    print(urllib.request.urlopen(url, timeout=5).read().decode())
except Exception as e:
    print(f"ERROR {type(e).__name__}: {e}")
"""


def fetch(node: str, url: str, *query: str, user: str | None = None) -> str:
    argv = " ".join(shlex.quote(a) for a in (url, *query))
    return node_exec(node, f"python3 -c {shlex.quote(FETCH)} {argv}", user=user).strip()


def prometheus(path: str, *query: str) -> dict:
    """Prometheus's API, asked on the controller node (it listens on its loopback)."""
    answer = json.loads(fetch(CONTROLLER, f"{PROMETHEUS}{path}", *query))
    assert answer["status"] == "success", answer
    return answer["data"]


def query(expr: str) -> list[dict]:
    """An instant query."""
    return prometheus("/api/v1/query", expr)["result"]


def wait_for_value(expr: str, wanted, timeout: float = 60) -> list[dict]:
    """Until the query answers with series whose value satisfies `wanted` (a predicate)."""
    deadline = time.monotonic() + timeout
    result: list[dict] = []
    while time.monotonic() < deadline:
        result = query(expr)
        if result and all(wanted(float(r["value"][1])) for r in result):
            return result
        time.sleep(1)
    raise AssertionError(f"{expr}: {result} after {timeout:.0f} s")


def test_prometheus_scrapes_the_hub_and_hpchubs_slurm_view(alice, alice_server):
    (up,) = wait_for_value('up{job="jupyterhub"}', lambda v: v == 1)
    assert up["metric"]["instance"] == f"{LOGIN}:443"
    # JupyterHub's own series, and the one alice's running server adds.
    wait_for_value('jupyterhub_total_users{job="jupyterhub"}', lambda v: v >= 2)
    wait_for_value('jupyterhub_running_servers{job="jupyterhub"}', lambda v: v >= 1)
    # hpchub's: the hub's jobs as its one Slurm view sees them, and its queries.
    wait_for_value('hpchub_slurm_jobs{job="jupyterhub",state="RUNNING"}', lambda v: v >= 1)
    wait_for_value('hpchub_slurm_queries_total{job="jupyterhub",outcome="ok"}', lambda v: v >= 1)


def test_the_metrics_token_reads_the_metrics_and_nothing_else(access, alice):
    listing = node_exec(CONTROLLER, f"stat -c '%a %U' {TOKEN_FILE}")
    assert listing.strip() == "600 prometheus", listing
    token = node_exec(CONTROLLER, f"cat {TOKEN_FILE}").strip()
    hub = access["hub_url"].rstrip("/")

    def get(path: str, **headers) -> requests.Response:
        return requests.get(f"{hub}{path}", headers=headers, verify=access["ca_cert"], timeout=30)

    with_token = get("/hub/metrics", Authorization=f"Bearer {token}")
    assert with_token.status_code == 200 and "jupyterhub_total_users" in with_token.text
    assert get("/hub/metrics").status_code == 403  # no token, no metrics
    auth = {"Authorization": f"token {token}"}
    assert get("/hub/api/users", **auth).status_code == 403
    assert get(f"/hub/api/users/{alice.name}", **auth).status_code in (403, 404)
    made = requests.post(
        f"{hub}/hub/api/users/{alice.name}/tokens",
        headers=auth,
        json={"note": "from the metrics token"},
        verify=access["ca_cert"],
        timeout=30,
    )
    assert made.status_code in (403, 404), made.text


def test_prometheus_listens_on_the_loopback_only():
    listening = node_exec(CONTROLLER, "ss -ltnH '( sport = :9090 )'").splitlines()
    assert [line.split()[3] for line in listening if line.strip()] == ["127.0.0.1:9090"], listening
    # A cluster user elsewhere cannot reach it.
    tried = fetch(LOGIN, f"http://{CONTROLLER}:9090/api/v1/query", "up", user="alice")
    assert tried.startswith("ERROR"), tried


def test_the_alert_rules_are_loaded_and_their_tests_can_fail():
    rules = prometheus("/api/v1/rules")
    names = {r["name"] for g in rules["groups"] for r in g["rules"]}
    assert {
        "JupyterHubDown",
        "JupyterHubSpawnFailures",
        "NotebookJobsPendingLong",
        "SlurmUnreachableFromHub",
    } <= names, names
    passed = node_exec(CONTROLLER, f"cd {RULES} && promtool test rules hpchub-alerts.test.yml")
    assert "SUCCESS" in passed, passed
    # The same tests against a broken rule (the hub is "down" only when up == 2) fail.
    broken = node_exec(
        CONTROLLER,
        "d=$(mktemp -d) && cp "
        f"{RULES}/hpchub-alerts.yml {RULES}/hpchub-alerts.test.yml $d && "
        'sed -i \'s/up{job="jupyterhub"} == 0/up{job="jupyterhub"} == 2/\' $d/hpchub-alerts.yml && '
        "cd $d && promtool test rules hpchub-alerts.test.yml 2>&1; echo rc=$?; rm -rf $d",
        check=False,
    )
    assert "rc=1" in broken and "JupyterHubDown" in broken, broken


def test_a_stopped_hub_is_down_for_prometheus_and_its_alert_pending():
    node_exec(LOGIN, "systemctl stop jupyterhub")
    try:
        wait_for_value('up{job="jupyterhub"}', lambda v: v == 0, timeout=45)
        deadline = time.monotonic() + 45
        alerts: list = []
        while time.monotonic() < deadline:
            alerts = [
                a
                for a in prometheus("/api/v1/alerts")["alerts"]
                if a["labels"]["alertname"] == "JupyterHubDown"
            ]
            if alerts:
                break
            time.sleep(1)
        assert alerts and alerts[0]["state"] in ("pending", "firing"), alerts
    finally:
        node_exec(LOGIN, "systemctl start jupyterhub")
    wait_hub_api()
    wait_for_value('up{job="jupyterhub"}', lambda v: v == 1, timeout=90)
