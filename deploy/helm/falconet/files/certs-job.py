"""The chart's certificate Job: `falconet certs` makes a CA, a server and a client certificate, and this
stores them as Secrets through the Kubernetes API (the pod's service account, allowed to create Secrets in
its namespace only). Secrets that already exist are kept, so an upgrade never replaces certificates clients
trust; delete them to make new ones. Standard library only: it runs in the Falconet image."""

import base64
import json
import os
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

SA = Path(os.environ.get("FALCONET_SA_DIR", "/var/run/secrets/kubernetes.io/serviceaccount"))


def api(method, path, body=None):
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    url = f"https://{host}:{port}{path}" if ":" not in host else f"https://[{host}]:{port}{path}"
    ctx = ssl.create_default_context(cafile=str(SA / "ca.crt"))
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", "Bearer " + (SA / "token").read_text().strip())
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def secret(name, files, labels):
    data = {key: base64.b64encode(path.read_bytes()).decode() for key, path in files.items()}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "labels": labels}, "data": data}


def main():
    ns = os.environ.get("FALCONET_NAMESPACE") or (SA / "namespace").read_text().strip()
    names = json.loads(os.environ["FALCONET_SECRETS"])      # {"ca": ..., "server": ..., "client": ...}
    labels = json.loads(os.environ.get("FALCONET_LABELS", "{}"))
    base = f"/api/v1/namespaces/{ns}/secrets"
    present = {role: api("GET", f"{base}/{name}") == 200 for role, name in names.items()}
    if all(present.values()):
        print("falconet certs: the Secrets exist; kept")
        return 0
    if any(present.values()):
        have = ", ".join(names[r] for r, p in present.items() if p)
        print(f"falconet certs: only some Secrets exist ({have}); delete them all to make a new set",
              file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cmd = ["falconet", "certs", "init", "--dir", str(d), "--days", os.environ.get("FALCONET_DAYS", "825")]
        for san in json.loads(os.environ.get("FALCONET_SANS", "[]")):
            cmd += ["--san", san]
        subprocess.run(cmd, check=True)
        sets = {
            "ca": {"ca.crt": d / "ca.crt", "ca.key": d / "ca.key"},
            "server": {"ca.crt": d / "ca.crt", "tls.crt": d / "server.crt", "tls.key": d / "server.key"},
            "client": {"ca.crt": d / "ca.crt", "tls.crt": d / "client.crt", "tls.key": d / "client.key"},
        }
        for role, name in names.items():
            status = api("POST", base, secret(name, sets[role], labels))
            if status not in (200, 201):
                print(f"falconet certs: creating Secret {name} failed: HTTP {status}", file=sys.stderr)
                return 1
            print(f"falconet certs: Secret {name} created")
    return 0


if __name__ == "__main__":
    sys.exit(main())
