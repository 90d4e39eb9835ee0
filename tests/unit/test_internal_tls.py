"""Internal TLS of the notebook jobs: certificates carried in the script, pinned at start.

Real certificates (JupyterHub's own generator, certipy) and real TLS sockets on the loopback:
the hub's check must accept only the certificate it issued for this spawn.
"""

import asyncio
import ssl
import subprocess

import pytest
from certipy import Certipy
from conftest import fake_hub, fake_user
from hpchub_config.spawner import ForeignServer, ProfilesSlurmSpawner, SpawnFailed
from test_spawner import REQUEST, alice_account, child_for, script_of  # noqa: F401

NAMES = ["DNS:localhost"]  # the "compute node" of these tests is the loopback


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """JupyterHub's internal CAs, the hub's certificate and two users' server certificates."""
    path = tmp_path_factory.mktemp("internal-tls")
    certipy = Certipy(store_dir=str(path))
    for ca in ("hub-ca", "notebooks-ca", "proxy-client-ca"):
        certipy.create_ca(ca)
    certipy.create_signed_pair("hub-internal", "hub-ca", alt_names=NAMES)
    for user in ("alice", "bob"):
        certipy.create_signed_pair(f"user-{user}", "notebooks-ca", alt_names=NAMES)
    bundles = certipy.trust_from_graph(
        {
            "hub-ca": ["hub-ca", "notebooks-ca", "proxy-client-ca"],
            "notebooks-ca": ["hub-ca", "proxy-client-ca"],
        }
    )
    return path, bundles


def files(store, user):
    path, bundles = store
    return {
        "keyfile": str(path / f"user-{user}" / f"user-{user}.key"),
        "certfile": str(path / f"user-{user}" / f"user-{user}.crt"),
        "cafile": bundles["notebooks-ca"],
    }


@pytest.fixture
def tls_child(spawner_config, store):
    path, bundles = store
    wrapper = ProfilesSlurmSpawner(user=fake_user(), hub=fake_hub(), config=spawner_config)
    wrapper.internal_ssl = True
    wrapper.internal_certs_location = str(path)
    wrapper.internal_trust_bundles = bundles
    child = child_for(wrapper)
    wrapper.cert_paths = asyncio.run(wrapper.move_certs(files(store, "alice")))
    child.ip = "localhost"
    child.job_id = "77"
    return wrapper, child


async def serve_and_check(child, server_context):
    """A listener on the loopback answering with `server_context`; the hub's check of it."""

    async def answer(reader, writer):
        try:
            await reader.read(1)
        except (ConnectionError, ssl.SSLError):
            pass
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
    child.port = server.sockets[0].getsockname()[1]
    try:
        return await child._accepts_connections()
    finally:
        server.close()


def server_context(store, user):
    f = files(store, user)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=f["cafile"])
    context.verify_mode = ssl.CERT_REQUIRED  # like jupyterhub-singleuser: clients need a cert
    context.load_cert_chain(f["certfile"], f["keyfile"])
    return context


def test_move_certs_carries_the_pem_texts_and_points_the_job_at_its_own_folder(tls_child, store):
    wrapper, child = tls_child
    assert child.tls_files["cert"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" in child.tls_files["key"]
    assert wrapper.cert_paths["keyfile"] == "$hpchub_tls/server.key"


def test_the_script_writes_the_key_to_a_private_folder_and_exports_its_paths(tls_child):
    _wrapper, child = tls_child
    script = script_of(child)
    assert child.tls_files["key"].strip() in script
    assert 'hpchub_tls=$(mktemp -d "${TMPDIR:-/tmp}/hpchub-tls.XXXXXXXX")' in script
    assert "umask 077" in script.split("hpchub_tls=$(mktemp")[0].rsplit("\n", 3)[-2]
    assert 'export JUPYTERHUB_SSL_KEYFILE="$hpchub_tls/server.key"' in script
    # The placeholder paths are never exported quoted (they would not be expanded).
    assert "JUPYTERHUB_SSL_KEYFILE='$hpchub_tls" not in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_the_script_runs_and_removes_the_key_when_the_server_exits(tls_child, tmp_path):
    """The job's TLS block and server wrapper, run by bash with a stand-in server."""
    _wrapper, child = tls_child
    script = script_of(child)
    body = script[script.index("hpchub_umask=$(umask)\numask 077\nhpchub_tls") :]
    body = body[: body.index("export PATH=")] + (
        'ls -l "$hpchub_tls" > "$OUT/listing"; stat -c %a "$hpchub_tls" > "$OUT/mode"\n'
        'cmp -s "$hpchub_tls/server.crt" "$OUT/expected.crt" && echo same > "$OUT/cert"\n'
        'echo "$hpchub_tls" > "$OUT/dir"\n' + body[body.index("# The server runs") :]
    )
    body = body.replace(f"{child.cmd_formatted_for_batch()} &", "sleep 0.2 &")
    (tmp_path / "expected.crt").write_text(child.tls_files["cert"].strip() + "\n")
    env = {"OUT": str(tmp_path), "TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(["bash", "-eu"], input=body, text=True, env=env, capture_output=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "mode").read_text().strip() == "700"
    assert (tmp_path / "cert").read_text().strip() == "same"
    listing = (tmp_path / "listing").read_text()
    assert all(line.startswith("-rw-------") for line in listing.splitlines()[1:]), listing
    # removed on exit
    assert not (tmp_path / (tmp_path / "dir").read_text().strip()).exists()


def test_a_pem_text_that_could_end_the_heredoc_is_refused(tls_child):
    _wrapper, child = tls_child
    child.tls_files = {**child.tls_files, "ca": "HPCHUB_TLS_END\nrm -rf ~\n"}
    with pytest.raises(SpawnFailed, match="not PEM text"):
        script_of(child)


def test_the_server_with_the_certificate_issued_for_this_spawn_is_accepted(tls_child, store):
    _wrapper, child = tls_child
    assert asyncio.run(serve_and_check(child, server_context(store, "alice"))) is True


def test_port_checks_share_one_tls_context(tls_child, store):
    # A context per check loaded the system CA store every 0.5 s per starting server,
    # blocking the hub's event loop during a burst (docs/performance.md).
    _wrapper, child = tls_child
    first = child._tls_client_context()
    assert child._tls_client_context() is first
    assert asyncio.run(serve_and_check(child, server_context(store, "alice"))) is True
    assert child._tls_client_context() is first


def test_another_users_server_on_the_reported_port_is_refused(tls_child, store):
    """Bob's certificate is valid (same CA, same node name) but is not this spawn's."""
    _wrapper, child = tls_child
    with pytest.raises(ForeignServer, match="another server's certificate"):
        asyncio.run(serve_and_check(child, server_context(store, "bob")))


def test_a_plain_listener_on_the_reported_port_is_refused(tls_child):
    _wrapper, child = tls_child
    with pytest.raises(ForeignServer, match="TLS handshake"):
        asyncio.run(serve_and_check(child, None))


def test_a_port_nobody_listens_on_yet_is_waited_for(tls_child):
    _wrapper, child = tls_child

    async def closed_port():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        child.port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        return await child._accepts_connections()

    assert asyncio.run(closed_port()) is False


def test_certificates_name_the_nodes_of_the_partition_and_the_public_names(
    wrapper_with_partitions,
):
    names = asyncio.run(ProfilesSlurmSpawner._server_names(wrapper_with_partitions))
    # One origin: the proxy checks a server against the hub's public names.
    assert names == ["DNS:c1", "DNS:c2", "DNS:login1", "DNS:jupyter.example.org"]
    wrapper_with_partitions.request = REQUEST.__class__(**{**REQUEST.__dict__, "partition": "gpu"})
    names = asyncio.run(ProfilesSlurmSpawner._server_names(wrapper_with_partitions))
    assert names[0] == "DNS:g1" and "DNS:c1" not in names


def test_with_per_user_origins_a_certificate_names_only_its_users_host(
    wrapper_with_partitions, spawner_config
):
    hub = wrapper_with_partitions.settings.hub
    wrapper_with_partitions.settings = wrapper_with_partitions.settings.__class__(
        **{
            **wrapper_with_partitions.settings.__dict__,
            "hub": hub.__class__(**{**hub.__dict__, "subdomain_host": "https://hub.example.org"}),
        }
    )
    names = asyncio.run(ProfilesSlurmSpawner._server_names(wrapper_with_partitions))
    # bob's certificate never names alice.hub.example.org: the proxy refuses it for her.
    assert names == ["DNS:c1", "DNS:c2", "DNS:alice.hub.example.org"]


def test_no_node_names_fail_the_spawn(wrapper_with_partitions, monkeypatch):
    async def none():
        return {}

    monkeypatch.setattr(wrapper_with_partitions.cluster, "partitions", none)
    with pytest.raises(SpawnFailed, match="no compute node"):
        asyncio.run(ProfilesSlurmSpawner._server_names(wrapper_with_partitions))


@pytest.fixture
def wrapper_with_partitions(spawner_config, partitions, monkeypatch):
    wrapper = ProfilesSlurmSpawner(user=fake_user(), hub=fake_hub(), config=spawner_config)
    wrapper.request = REQUEST

    async def fake_partitions():
        return partitions

    monkeypatch.setattr(wrapper.cluster, "partitions", fake_partitions)
    return wrapper
