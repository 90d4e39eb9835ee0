"""A small client for the testbed hub, used by the end-to-end tests and the benchmarks.

It talks to the hub only through its public URL (https://hub.localhost:<port>), as a user
would: the login form, the REST API with the user's own token, JupyterLab behind the
proxy at the user's own origin (https://NAME.hub.localhost:<port>), kernels over
websockets. Slurm and node state are read with `docker exec`.

Browsers resolve every `*.localhost` name to the loopback (RFC 6761); this process does the
same for itself (the host's resolver may not), so the testbed needs no DNS or /etc/hosts.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests
import websocket

from .topology import LOGIN, REPO, container

ACCESS_FILE = REPO / ".testbed" / "access.json"

_system_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host, *args, **kwargs):
    # *.localhost is the loopback (RFC 6761), as in browsers; TLS still checks the name.
    if isinstance(host, str) and (host == "localhost" or host.endswith(".localhost")):
        host = "127.0.0.1"
    return _system_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _getaddrinfo


def user_origin(access: dict, name: str) -> str:
    """Where a user's server is served: its own origin with per-user subdomains."""
    subdomain_host = access.get("subdomain_host") or ""
    if not subdomain_host:
        return access["hub_url"].rstrip("/")
    scheme, rest = subdomain_host.split("://", 1)
    return f"{scheme}://{name}.{rest.rstrip('/')}"


def service_origin(access: dict, name: str) -> str:
    """Where a hub service is served (NAME--service.<hub domain> with per-user subdomains)."""
    return user_origin(access, f"{name}--service")


def load_access(path: Path = ACCESS_FILE) -> dict:
    if not path.exists():
        raise RuntimeError(
            f"{path} is missing: bring the testbed up first (`make testbed`), "
            "or run the whole suite with `make test`."
        )
    return json.loads(path.read_text())


def node_exec(node: str, command: str, user: str | None = None, check: bool = True) -> str:
    """Run a shell command in a testbed container (optionally as a user)."""
    argv = ["docker", "exec"]
    if user:
        argv += ["-u", user]
    argv += [container(node), "bash", "-lc", command]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise RuntimeError(f"{node}: {command!r} failed ({result.returncode}): {result.stderr}")
    return result.stdout


@dataclass
class Job:
    job_id: str
    user: str
    name: str
    state: str
    node: str


def slurm_jobs(user: str | None = None) -> list[Job]:
    """Notebook and other jobs as squeue on the login node reports them."""
    selector = f"-u {user}" if user else ""
    out = node_exec(LOGIN, f"squeue -h {selector} -o '%i|%u|%j|%T|%N'")
    return [Job(*line.split("|")) for line in out.splitlines() if line.strip()]


class HubError(RuntimeError):
    pass


class HubUser:
    """One person using the hub: a browser-like session plus their own API token."""

    def __init__(self, access: dict, name: str, password: str):
        self.base = access["hub_url"].rstrip("/")
        self.server_base = user_origin(access, name)
        self.access = access
        self.ca = access["ca_cert"]
        self.name = name
        self.password = password
        self.session = requests.Session()
        # Only the testbed's CA, no proxies from the environment (REQUESTS_CA_BUNDLE would
        # otherwise win over session.verify).
        self.session.trust_env = False
        self.session.verify = self.ca
        self.token: str | None = None

    def service(self, name: str) -> str:
        """A hub service's base URL, e.g. .../services/announcement."""
        return f"{service_origin(self.access, name)}/services/{name}"

    # --- the login form and the user's own token -----------------------------------
    def login(self, password: str | None = None) -> requests.Response:
        self.session.get(f"{self.base}/hub/login", timeout=30)
        xsrf = self.session.cookies.get("_xsrf", path="/hub/")
        return self.session.post(
            f"{self.base}/hub/login",
            data={"username": self.name, "password": password or self.password, "_xsrf": xsrf},
            timeout=60,
            allow_redirects=True,
        )

    def xsrf_headers(self) -> dict:
        return {"X-XSRFToken": self.session.cookies.get("_xsrf", path="/hub/") or ""}

    def create_token(self, note: str = "hpchub e2e tests") -> str:
        response = self.session.post(
            f"{self.base}/hub/api/users/{self.name}/tokens",
            json={"note": note, "expires_in": 7200},
            headers=self.xsrf_headers(),
            timeout=30,
        )
        if response.status_code != 201:
            raise HubError(f"token for {self.name}: {response.status_code} {response.text}")
        self.token = response.json()["token"]
        return self.token

    @property
    def auth(self) -> dict:
        return {"Authorization": f"token {self.token}"}

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.session.request(
            method,
            f"{self.base}/hub/api{path}",
            headers={**self.auth, **kwargs.pop("headers", {})},
            verify=self.ca,
            timeout=kwargs.pop("timeout", 60),
            **kwargs,
        )

    # --- servers -----------------------------------------------------------------------
    def server_model(self) -> dict | None:
        model = self.api("GET", f"/users/{self.name}").json()
        return model.get("servers", {}).get("")

    def request_server(self, options: dict | None = None) -> requests.Response:
        return self.api("POST", f"/users/{self.name}/server", json=options or {})

    def wait_ready(self, timeout: float = 180, poll: float = 0.25) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.server_model()
            if server and server.get("ready"):
                return server
            if not server:
                progress = self.last_progress_message()
                raise HubError(f"{self.name}'s server is gone: {progress}")
            time.sleep(poll)
        raise HubError(f"{self.name}'s server not ready after {timeout} s")

    def last_progress_message(self) -> str:
        """The spawn-progress event stream's last message (what the user would see)."""
        response = self.api("GET", f"/users/{self.name}/server/progress", stream=True, timeout=30)
        message = ""
        for line in response.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                message = event.get("message", message)
                if event.get("failed") or event.get("ready"):
                    break
        return message

    def start_server(
        self, options: dict | None = None, timeout: float = 180, poll: float = 0.25
    ) -> float:
        """Start and wait (asking for the server model every `poll` s); seconds to ready."""
        started = time.monotonic()
        response = self.request_server(options)
        if response.status_code not in (201, 202):
            raise HubError(f"spawn refused: {response.status_code} {response.text}")
        self.wait_ready(timeout, poll=poll)
        self.wait_reachable(timeout)
        return time.monotonic() - started

    def stop_server(self, timeout: float = 60) -> None:
        response = self.api("DELETE", f"/users/{self.name}/server")
        if response.status_code not in (202, 204, 400):
            raise HubError(f"stop: {response.status_code} {response.text}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server_model() is None:
                return
            time.sleep(0.5)
        raise HubError(f"{self.name}'s server did not stop within {timeout} s")

    # --- JupyterLab behind the proxy ---------------------------------------------------
    def server_api(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.session.request(
            method,
            f"{self.server_base}/user/{self.name}/{path.lstrip('/')}",
            headers={**self.auth, **kwargs.pop("headers", {})},
            verify=self.ca,
            timeout=kwargs.pop("timeout", 60),
            allow_redirects=kwargs.pop("allow_redirects", False),
            **kwargs,
        )

    def wait_reachable(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.server_api("GET", "api/status")
            if last.status_code == 200:
                return
            time.sleep(0.25)
        raise HubError(f"JupyterLab of {self.name} not reachable: {last and last.status_code}")

    def run_code(self, code: str, timeout: float = 90) -> str:
        """Start a kernel, run code over the websocket, return its stdout."""
        kernel = self.server_api("POST", "api/kernels", json={"name": "python3"})
        if kernel.status_code != 201:
            raise HubError(f"kernel start: {kernel.status_code} {kernel.text}")
        kernel_id = kernel.json()["id"]
        try:
            return self._execute(kernel_id, code, timeout)
        finally:
            self.server_api("DELETE", f"api/kernels/{kernel_id}")

    def _execute(self, kernel_id: str, code: str, timeout: float) -> str:
        url = self.server_base.replace("https://", "wss://") + (
            f"/user/{self.name}/api/kernels/{kernel_id}/channels"
        )
        ws = websocket.create_connection(
            url,
            header=[f"Authorization: token {self.token}"],
            sslopt={"ca_certs": self.ca, "cert_reqs": ssl.CERT_REQUIRED},
            timeout=timeout,
        )
        msg_id = uuid.uuid4().hex
        ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "username": self.name,
                        "session": uuid.uuid4().hex,
                        "msg_type": "execute_request",
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "channel": "shell",
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                }
            )
        )
        output, errors = [], []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                message = json.loads(ws.recv())
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = message["msg_type"]
                if kind == "stream":
                    output.append(message["content"]["text"])
                elif kind == "error":
                    errors.append("\n".join(message["content"]["traceback"]))
                elif kind == "status" and message["content"]["execution_state"] == "idle":
                    break
        finally:
            ws.close()
        if errors:
            raise HubError(re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(errors)))
        return "".join(output)
