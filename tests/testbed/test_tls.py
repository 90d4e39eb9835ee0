"""The hub's self-signed certificate is a leaf: its key cannot mint certificates clients trust."""

from __future__ import annotations

import shlex
import ssl
from urllib.parse import urlparse

import pytest

from .hubclient import node_exec
from .topology import LOGIN

pytestmark = pytest.mark.testbed

CERT = "/etc/jupyterhub/tls/hub.crt"


def test_served_certificate_is_the_deployed_leaf(access):
    url = urlparse(access["hub_url"])
    served = ssl.get_server_certificate((url.hostname, url.port))
    deployed = node_exec(LOGIN, f"cat {CERT}")
    assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(deployed)
    extensions = node_exec(LOGIN, f"openssl x509 -in {CERT} -noout -ext basicConstraints,keyUsage")
    assert "CA:FALSE" in extensions and "CA:TRUE" not in extensions
    assert "Certificate Sign" not in extensions


def test_the_hub_account_cannot_mint_a_certificate_that_clients_trust():
    """Whoever owns the hub account (and so the key) signs a certificate for another name."""
    # (-set_serial: the certificate's folder is root's, so no serial file can be written there)
    script = (
        "set -e; d=$(mktemp -d); cd $d; "
        "openssl req -newkey rsa:2048 -nodes -subj /CN=evil.example -keyout e.key -out e.csr "
        "2>/dev/null; "
        "printf 'subjectAltName=DNS:evil.example\\n' > ext; "
        f"openssl x509 -req -in e.csr -CA {CERT} -CAkey /etc/jupyterhub/secrets/hub.key "
        "-set_serial 7 -days 2 -extfile ext -out e.pem; "
        "echo signed: $(openssl x509 -in e.pem -noout -subject); "
        f"openssl verify -CAfile {CERT} e.pem 2>&1 || true; cd /; rm -rf $d"
    )
    out = node_exec(LOGIN, f"runuser -u jupyterhub -- bash -c {shlex.quote(script)}")
    assert "signed: subject=CN = evil.example" in out  # the attempt was real
    assert "invalid CA certificate" in out or "certificate signing" in out
    assert "e.pem: OK" not in out
