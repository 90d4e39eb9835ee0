"""A shared login node and shared compute nodes: ordinary users attack the hub's internal traffic.

Every attack runs as an ordinary cluster user (alice or bob) with a shell on a node, never as
root; root only restarts services and reads which port a server listens on, as an admin would.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
import time

import pytest

from .hubclient import node_exec, slurm_jobs
from .test_hub_restarts import TLS_DIR, wait_hub_api
from .topology import LOGIN

pytestmark = pytest.mark.testbed

# Binds PORT on ADDRESS over and over for SECONDS (as a squatter would while the service that
# owns it restarts), accepts whatever connects and records what it receives. Prints a JSON
# summary: how often the kernel refused the bind, how often it succeeded, the bytes received.
SQUATTER = r"""
import errno, json, socket, sys, time
port, address, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
result = {"refused": 0, "in_use": 0, "bound": 0, "received": ""}
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((address, port))
    except PermissionError:
        result["refused"] += 1
    except OSError as e:
        result["in_use" if e.errno == errno.EADDRINUSE else "other"] = str(e)
    else:
        result["bound"] += 1
        s.listen(16)
        s.settimeout(0.2)
        try:
            conn, _ = s.accept()
            conn.settimeout(1)
            result["received"] += conn.recv(65536).decode("latin-1")
            conn.close()
        except OSError:
            pass
    s.close()
    time.sleep(0.02)
print(json.dumps(result))
"""

# A TLS client without a certificate (or with the one given), as any user could run it.
TLS_CLIENT = r"""
import socket, ssl, sys
host, port = sys.argv[1], int(sys.argv[2])
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
if len(sys.argv) > 3:
    context.load_cert_chain(sys.argv[3], sys.argv[4])
try:
    with socket.create_connection((host, port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            answer = tls.recv(200)
    print("ANSWERED " + answer.decode("latin-1") if answer else "CLOSED")
except (ssl.SSLError, OSError) as e:
    print(f"REFUSED {type(e).__name__}: {e}")
"""

PLAIN_CLIENT = r"""
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(f"GET /hub/api/ HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        s.settimeout(5)
        print("ANSWERED " + s.recv(200).decode("latin-1"))
except OSError as e:
    print(f"REFUSED {type(e).__name__}: {e}")
"""


def run_python(node: str, source: str, *args: str, user: str) -> str:
    argv = " ".join(shlex.quote(a) for a in args)
    return node_exec(node, f"python3 -c {shlex.quote(source)} {argv}", user=user).strip()


def squat_during(restart: str, ports: list[tuple[int, str]], seconds: float = 8.0) -> list[dict]:
    """alice squats the ports while root runs `restart`; what each squatter saw."""
    results: list[dict] = [{} for _ in ports]

    def squat(i: int, port: int, address: str) -> None:
        out = run_python(LOGIN, SQUATTER, str(port), address, str(seconds), user="alice")
        results[i] = json.loads(out)

    threads = [
        threading.Thread(target=squat, args=(i, port, address))
        for i, (port, address) in enumerate(ports)
    ]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    node_exec(LOGIN, restart)
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_the_kernel_refuses_users_the_internal_ports_while_services_restart(alice, alice_server):
    # Proxy restart: its API port is free until the new proxy binds it.
    (proxy_api,) = squat_during("systemctl restart jupyterhub-proxy", [(801, "127.0.0.1")])
    wait_hub_api()
    # Hub restart: the hub API and the announcement service (a hub-managed service).
    hub_api, announcement = squat_during(
        "systemctl restart jupyterhub",
        [(881, "0.0.0.0"), (888, "127.0.0.1")],  # noqa: S104
    )
    wait_hub_api()
    for name, seen in (("proxy API", proxy_api), ("hub API", hub_api), ("announce", announcement)):
        assert seen["refused"] > 10, (name, seen)  # it really tried, all along
        assert seen["bound"] == 0 and seen["received"] == "", (name, seen)
    # Everything came back and the running server is still reachable through the proxy.
    alice.wait_reachable(timeout=60)
    assert alice.server_api("GET", "api/status").status_code == 200
    assert node_exec(LOGIN, "ss -ltnH '( sport = :888 )'").split()[3] == "127.0.0.1:888"


def test_the_hub_api_speaks_only_mutual_tls(alice, alice_server):
    node = alice_server["job"].node
    # From the compute node, as an ordinary user: no client certificate, no hub.
    no_cert = run_python(node, TLS_CLIENT, LOGIN, "881", user="alice")
    assert no_cert.startswith(("REFUSED", "CLOSED")), no_cert
    plain = run_python(node, PLAIN_CLIENT, LOGIN, "881", user="alice")
    assert "200 OK" not in plain and "jupyterhub" not in plain.lower(), plain
    # The proxy API on the login node: no certificate of the hub's CA, no API.
    no_cert = run_python(LOGIN, TLS_CLIENT, "127.0.0.1", "801", user="bob")
    assert no_cert.startswith(("REFUSED", "CLOSED")), no_cert


def reported_port(user: str) -> str:
    """The port the user's job last reported to the hub (root reads the hub's log)."""
    ports = hub_journal("-15min", rf"{user}: notebook job reported port (\d+)")
    assert ports, f"no port report from {user}'s job in the hub's log"
    return ports[-1]


def tls_folder(user: str, node: str) -> str:
    """The TLS folder of the user's running server on the node (root reads the server's
    environment, as an admin would: folders of killed jobs may linger next to it)."""
    find = (
        f"for p in $(pgrep -u {user} -f batchspawner-singleuser); do "
        "tr '\\0' '\\n' < /proc/$p/environ | sed -n 's/^JUPYTERHUB_SSL_KEYFILE=//p'; done"
    )
    keys = set(node_exec(node, find).split())
    assert len(keys) == 1, keys
    return keys.pop().rsplit("/", 1)[0]


def test_a_users_server_accepts_only_the_hub_and_the_proxy(no_server, alice, bob):
    alice.start_server({"profile": "small"})
    bob.start_server({"profile": "small"})
    (alice_job,) = slurm_jobs("alice")
    (bob_job,) = slurm_jobs("bob")
    port = reported_port("alice")
    # alice's key never left her: a 0600 file in a 0700 folder on her node.
    folder = tls_folder("alice", alice_job.node)
    modes = node_exec(alice_job.node, f"stat -c '%a %U' {folder} {folder}/server.key")
    assert modes.split("\n")[:2] == ["700 alice", "600 alice"], modes
    # bob, with no certificate, then with his own server's (same CA, valid for the node).
    no_cert = run_python(bob_job.node, TLS_CLIENT, alice_job.node, port, user="bob")
    assert no_cert.startswith(("REFUSED", "CLOSED")), no_cert
    bob_folder = tls_folder("bob", bob_job.node)
    with_cert = run_python(
        bob_job.node,
        TLS_CLIENT,
        alice_job.node,
        port,
        f"{bob_folder}/server.crt",
        f"{bob_folder}/server.key",
        user="bob",
    )
    assert with_cert.startswith(("REFUSED", "CLOSED")), with_cert
    # ... while the proxy still reaches it.
    alice.wait_reachable(timeout=60)
    assert alice.server_api("GET", "api/status").status_code == 200
    # When her server stops, its key goes with it.
    alice.stop_server()
    left = node_exec(alice_job.node, f"ls -d {folder} 2>/dev/null || true", user="alice")
    assert left.strip() == "", left


def test_internal_keys_belong_to_the_hub_account_only():
    # (certipy makes its own folders 0755: the state directory around them is 0700)
    key = f"{TLS_DIR}/notebooks-ca/notebooks-ca.key"
    listing = node_exec(LOGIN, f"stat -c '%a %U' /var/lib/jupyterhub {key}")
    assert listing.split("\n")[:2] == ["700 jupyterhub", "600 jupyterhub"], listing
    refused = node_exec(LOGIN, f"cat {TLS_DIR}/hub-ca/hub-ca.key", user="alice", check=False)
    assert "PRIVATE KEY" not in refused


def hub_journal(since: str, pattern: str) -> list[str]:
    out = node_exec(LOGIN, f"journalctl -u jupyterhub -o cat --since '{since}' || true")
    return re.findall(pattern, out)


# bob's listener on the port alice's job reported, answering TLS with bob's own (valid) server
# certificate; it records every connection and what was sent to it.
IMPOSTOR = r"""
import json, socket, ssl, sys, time
port, crt, key, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
seconds = float(sys.argv[5])
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(crt, key)
s = socket.socket()
s.bind(("0.0.0.0", port))
s.listen(16)
s.settimeout(0.5)
seen = {"connections": 0, "received": ""}
def save():
    with open(out, "w") as f:
        json.dump(seen, f)
save()
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    try:
        conn, _ = s.accept()
    except socket.timeout:
        continue
    seen["connections"] += 1
    try:
        tls = context.wrap_socket(conn, server_side=True)
        tls.settimeout(2)
        seen["received"] += tls.recv(65536).decode("latin-1")
        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nbob-squatter!")
        tls.close()
    except (OSError, ssl.SSLError) as e:
        seen["received"] += f"[{type(e).__name__}]"
    save()
"""

# Stages the race window (alice's own configuration, loaded by jupyterhub-singleuser after
# batchspawner-singleuser reported the port and before the server binds it): while the hold
# file exists, her server waits. The attacker is bob; this only makes the window certain.
HOLD = "~/.hpchub-hold"
HOLD_CONFIG = (
    "import os, time\n"
    f"hold = os.path.expanduser({HOLD!r})\n"
    "deadline = time.monotonic() + 120\n"
    "while os.path.exists(hold) and time.monotonic() < deadline:\n"
    "    time.sleep(0.2)\n"
)


def wait_for_port_report(user: str, since: str, timeout: float = 150) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ports = hub_journal(since, rf"{user}: notebook job reported port (\d+)")
        if ports:
            return ports[-1]
        time.sleep(0.5)
    raise AssertionError(f"{user}'s job reported no port within {timeout:.0f} s")


def test_a_listener_with_another_users_certificate_on_the_reported_port_is_refused(
    no_server, alice, bob
):
    """bob binds the port alice's job reported before her server does, and answers with his
    own server's certificate (same CA, valid for the node): the hub refuses it, cancels the
    job, and sends nothing there."""
    bob.start_server({"profile": "small"})
    (bob_job,) = slurm_jobs("bob")
    bob_tls = tls_folder("bob", bob_job.node)
    bob_cert = node_exec(bob_job.node, f"cat {bob_tls}/server.crt", user="bob")
    bob_key = node_exec(bob_job.node, f"cat {bob_tls}/server.key", user="bob")

    node_exec(
        LOGIN,
        f"mkdir -p ~/.jupyter && printf %s {shlex.quote(HOLD_CONFIG)} "
        f"> ~/.jupyter/jupyter_server_config.py && touch {HOLD}",
        user="alice",
    )
    node = folder = ""
    try:
        since = node_exec(LOGIN, "date '+%Y-%m-%d %H:%M:%S'").strip()
        assert alice.request_server({"profile": "small"}).status_code in (201, 202)
        port = wait_for_port_report("alice", since)
        (alice_job,) = slurm_jobs("alice")
        node = alice_job.node
        held = node_exec(node, f"ss -ltnH '( sport = :{port} )'").strip()
        assert not held, f"alice's server listens on {port} despite the hold: {held}"
        # bob, on alice's node, with his own certificate and key, takes the reported port.
        folder = node_exec(node, "mktemp -d", user="bob").strip()
        for name, text in (("server.crt", bob_cert), ("server.key", bob_key)):
            node_exec(node, f"printf '%s\\n' {shlex.quote(text)} > {folder}/{name}", user="bob")
        out = f"{folder}/seen.json"
        node_exec(
            node,
            f"nohup python3 -c {shlex.quote(IMPOSTOR)} {port} {folder}/server.crt "
            f"{folder}/server.key {out} 90 >{folder}/log 2>&1 & "
            f"for i in $(seq 50); do [ -s {out} ] && break; sleep 0.1; done; cat {out}",
            user="bob",
        )
        # The hub connects, meets bob's certificate, gives up the spawn and cancels the job.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and alice.server_model() is not None:
            time.sleep(0.5)
        assert alice.server_model() is None, "the spawn went on with bob's listener"
        refusals = hub_journal(since, r"alice: (The port \d+ your notebook job .*)")
        assert refusals and "another server's certificate" in refusals[-1], refusals
        audit = node_exec(LOGIN, f"journalctl -t hpchub-audit -o cat --since '{since}'")
        assert '"event": "spawn_refused"' in audit and f"{node}:{port}" in audit, audit
        seen = json.loads(node_exec(node, f"cat {out}", user="bob"))
        assert seen["connections"] >= 1, seen  # the hub did come ...
        received = seen["received"].lower()
        assert "token" not in received and "cookie" not in received, seen  # ... sent nothing
        assert "get " not in received and "post " not in received, seen
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and slurm_jobs("alice"):
            time.sleep(1)
        assert not slurm_jobs("alice"), "alice's job was not cancelled"
    finally:
        node_exec(LOGIN, f"rm -f {HOLD} ~/.jupyter/jupyter_server_config.py", user="alice")
        if node:
            node_exec(node, "pkill -u bob -f seen.json", check=False)
        if node and folder:
            node_exec(node, f"rm -rf {folder}", user="bob", check=False)
