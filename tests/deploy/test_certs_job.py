"""The chart's certificate Job script (deploy/helm/falconet/files/certs-job.py), run as the Job runs it: a real
`falconet certs` makes the certificates and the script stores them through a Kubernetes API over real HTTPS
with the service account's token and CA. The API is a small stand-in (Secrets get and create only): what is
under test is the script, not Kubernetes."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy/helm/falconet/files/certs-job.py"
NS = "security"
NAMES = {"ca": "fleet-falconet-ca", "server": "fleet-falconet-server-tls", "client": "fleet-falconet-client-tls"}


class FakeSecretsAPI:
    """GET and POST of /api/v1/namespaces/NS/secrets over TLS; refuses a request without the token."""

    def __init__(self, certs: Path, token: str) -> None:
        self.secrets: dict[str, dict[str, Any]] = {}
        self.posts = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.headers.get("Authorization") != f"Bearer {token}":
                    return self._reply(401, {})
                name = self.path.rsplit("/", 1)[-1]
                if self.path.startswith(f"/api/v1/namespaces/{NS}/secrets/") and name in api.secrets:
                    return self._reply(200, api.secrets[name])
                return self._reply(404, {})

            def do_POST(self) -> None:  # noqa: N802
                if self.headers.get("Authorization") != f"Bearer {token}":
                    return self._reply(401, {})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != f"/api/v1/namespaces/{NS}/secrets":
                    return self._reply(404, {})
                name = body["metadata"]["name"]
                if name in api.secrets:
                    return self._reply(409, {})
                api.posts += 1
                api.secrets[name] = body
                return self._reply(201, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(certs / "server.crt", certs / "server.key")
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def data(self, name: str, key: str) -> bytes:
        return base64.b64decode(self.secrets[name]["data"][key])


@pytest.fixture
def api_and_env(tmp_path: Path) -> Iterator[tuple[FakeSecretsAPI, dict[str, str]]]:
    falconet = Path(sys.executable).with_name("falconet")
    api_certs = tmp_path / "api-certs"  # the stand-in API server's own certificate (localhost, 127.0.0.1)
    subprocess.run([str(falconet), "certs", "init", "--dir", str(api_certs)], check=True, capture_output=True)
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "ca.crt").write_bytes((api_certs / "ca.crt").read_bytes())
    (sa / "token").write_text("t0ken\n")
    (sa / "namespace").write_text(NS)
    api = FakeSecretsAPI(api_certs, "t0ken")
    env = dict(os.environ, PATH=f"{falconet.parent}:{os.environ['PATH']}", KUBERNETES_SERVICE_HOST="127.0.0.1",
               KUBERNETES_SERVICE_PORT=str(api.port), FALCONET_SA_DIR=str(sa), FALCONET_SECRETS=json.dumps(NAMES),
               FALCONET_SANS=json.dumps(["fleet-falconet-aggregator.security.svc", "*.fleet-falconet-nats-headless"]),
               FALCONET_DAYS="30", FALCONET_LABELS=json.dumps({"app.kubernetes.io/name": "falconet"}))
    yield api, env
    api.server.shutdown()
    api.server.server_close()


def run_job(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_the_job_stores_a_ca_a_server_and_a_client_certificate_once(
    api_and_env: tuple[FakeSecretsAPI, dict[str, str]]
) -> None:
    api, env = api_and_env
    done = run_job(env)
    assert done.returncode == 0, done.stderr
    assert sorted(api.secrets) == sorted(NAMES.values())
    assert set(api.secrets[NAMES["server"]]["data"]) == {"ca.crt", "tls.crt", "tls.key"}
    assert set(api.secrets[NAMES["client"]]["data"]) == {"ca.crt", "tls.crt", "tls.key"}
    assert api.secrets[NAMES["server"]]["metadata"]["labels"] == {"app.kubernetes.io/name": "falconet"}
    server = x509.load_pem_x509_certificate(api.data(NAMES["server"], "tls.crt"))
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert {"fleet-falconet-aggregator.security.svc", "*.fleet-falconet-nats-headless"} <= set(sans)
    ca = x509.load_pem_x509_certificate(api.data(NAMES["ca"], "ca.crt"))
    assert server.issuer == ca.subject
    assert api.data(NAMES["server"], "ca.crt") == api.data(NAMES["client"], "ca.crt") == api.data(NAMES["ca"], "ca.crt")
    # An upgrade runs the Job again: the certificates clients trust are kept.
    again = run_job(env)
    assert again.returncode == 0 and "the Secrets exist; kept" in again.stdout
    assert api.posts == 3


def test_a_partial_set_is_refused_rather_than_mixed(api_and_env: tuple[FakeSecretsAPI, dict[str, str]]) -> None:
    api, env = api_and_env
    api.secrets[NAMES["client"]] = {"metadata": {"name": NAMES["client"]}, "data": {}}
    done = run_job(env)
    assert done.returncode == 1
    assert f"only some Secrets exist ({NAMES['client']}); delete them all" in done.stderr
    assert api.posts == 0


def test_a_refused_token_fails_the_job(api_and_env: tuple[FakeSecretsAPI, dict[str, str]]) -> None:
    api, env = api_and_env
    Path(env["FALCONET_SA_DIR"], "token").write_text("wrong")
    done = run_job(env)
    assert done.returncode == 1 and "HTTP 401" in done.stderr
    assert api.posts == 0
