"""The daemon's SIGHUP enforces a new CRL: a revoked client subscribed over mTLS is cut, refused after, and
other clients keep their streams (issue 10, "Deliver" item 2; `falconet serve`'s SIGHUP is tested in
tests/server/test_server_revocation.py)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from daemon_harness import TEST_RULES, DaemonProcess, Fifo, base_config, open_event, wait_until

from falconet.certs import init_certs, issue_client
from falconet.certs.revoke import revoke
from falconet.sdk.api.falco import outputs_pb2, outputs_pb2_grpc
from falconet.sdk.api.falconet.v1 import types_pb2

Start = Callable[..., tuple[DaemonProcess, Fifo]]
pytestmark = pytest.mark.slow  # a daemon process


class Sub:
    """A Falco `sub` stream from the oldest alert, read in a thread."""

    def __init__(self, target: str, certs: Path, name: str) -> None:
        creds = grpc.ssl_channel_credentials(
            (certs / "ca.crt").read_bytes(), (certs / f"{name}.key").read_bytes(), (certs / f"{name}.crt").read_bytes()
        )
        self.channel = grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", "localhost")])
        start = types_pb2.Start(position=types_pb2.Start.POSITION_OLDEST)
        self.call = outputs_pb2_grpc.serviceStub(self.channel).sub(iter([outputs_pb2.request(start=start)]))
        self.procs: list[str] = []
        self.error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.procs.append(response.output_fields["proc.name"])
        except grpc.RpcError as exc:
            self.error = exc


def test_sighup_cuts_a_revoked_subscriber_and_keeps_the_others(tmp_path: Path, start_daemon: Start) -> None:
    certs = tmp_path / "certs"
    init_certs(certs)
    issue_client(certs, "alice")
    issue_client(certs, "bob")
    rules = tmp_path / "rules.yaml"
    rules.write_text(TEST_RULES)
    config = base_config(tmp_path, rules).replace(
        f"bind_address: [\"unix://{tmp_path / 'falconet.sock'}\"]",
        f"bind_address: [\"unix://{tmp_path / 'falconet.sock'}\", \"127.0.0.1:0\"]\n"
        f"  private_key: {certs / 'server.key'}\n  cert_chain: {certs / 'server.crt'}\n"
        f"  root_certs: {certs / 'ca.crt'}",
    )
    daemon, fifo = start_daemon(config)
    port = int(daemon.wait_for_line(r"listening on 127\.0\.0\.1:(\d+)").group(1))
    alice, bob = Sub(f"127.0.0.1:{port}", certs, "alice"), Sub(f"127.0.0.1:{port}", certs, "bob")
    try:
        fifo.send(open_event(1, "/etc/shadow", name="first"))
        wait_until(lambda: alice.procs == ["first"] and bob.procs == ["first"], what="both subscribers")

        revoke(certs, "alice")
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_line(r"falconet: reloaded")
        alice.thread.join(20)
        assert alice.error is not None and alice.error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "revoked" in str(alice.error.details())
        again = Sub(f"127.0.0.1:{port}", certs, "alice")
        again.thread.join(20)
        assert again.error is not None and again.error.code() == grpc.StatusCode.PERMISSION_DENIED

        fifo.send(open_event(2, "/etc/shadow", name="second"))
        wait_until(lambda: bob.procs == ["first", "second"], what="bob's stream after the reload")
        assert bob.error is None
    finally:
        for sub in (alice, bob):
            sub.call.cancel()
            sub.channel.close()
    fifo.close()
    assert daemon.wait() == 0
