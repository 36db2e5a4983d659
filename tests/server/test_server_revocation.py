"""Revocation over mTLS: a certificate revoked with `falconet certs revoke` is cut at the reload (SIGHUP) while
subscribed, and refused from then on; other clients keep working (issue 10, "Deliver" item 2)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from server_support import make_alert, mtls_credentials, start_oldest, wait_until
from shared_server import start_server
from test_server_serve_cli import FALCONET, Serve

from falconet.certs import init_certs, issue_client
from falconet.certs.errors import CertError
from falconet.certs.revoke import revoke
from falconet.model.alert import Alert, Priority
from falconet.sdk.api.falco import outputs_pb2, outputs_pb2_grpc
from falconet.sdk.api.falconet.v1 import alerts_pb2, alerts_pb2_grpc, inputs_pb2, inputs_pb2_grpc
from falconet.sdk.convert import alert_to_proto


class Stream:
    """A Falco `sub` stream read in a thread: the rules received, and how it ended."""

    def __init__(self, channel: grpc.Channel) -> None:
        stub = outputs_pb2_grpc.serviceStub(channel)
        self.call = stub.sub(iter([outputs_pb2.request(start=start_oldest())]))
        self.rules: list[str] = []
        self.error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.rules.append(response.rule)
        except grpc.RpcError as exc:
            self.error = exc


def _refused(channel: grpc.Channel) -> grpc.RpcError:
    stub = alerts_pb2_grpc.AlertServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.GetAll(alerts_pb2.GetAllRequest(), timeout=10))
    return info.value


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    init_certs(directory)
    issue_client(directory, "alice")
    issue_client(directory, "bob")
    return directory


@pytest.fixture
def served(certs: Path) -> Iterator[tuple[Serve, str]]:
    sock = Path(tempfile.mkdtemp(prefix="fn-", dir="/tmp")) / "f.sock"
    serve = Serve(["--listen", f"unix://{sock}", "--listen", "127.0.0.1:0", "--certs", str(certs)])
    try:
        serve.expect("listening on ")
        yield serve, serve.expect("listening on ").removeprefix("listening on ")
    finally:
        serve.close()
        shutil.rmtree(sock.parent, ignore_errors=True)


def _publish_over_unix(serve: Serve, rule: str) -> None:
    # The serve process's UNIX socket is its first --listen address.
    target = next(arg for arg in serve.proc.args if str(arg).startswith("unix://"))  # type: ignore[union-attr]
    alert = Alert(time_ns=1, rule=rule, priority=Priority.NOTICE, output="x", source="syscall")
    with grpc.insecure_channel(str(target)) as channel:
        inputs_pb2_grpc.InputServiceStub(channel).Publish(
            iter([inputs_pb2.PublishRequest(alerts=[alert_to_proto(alert)])]), timeout=10
        )


@pytest.mark.slow  # ~1 s: a `falconet serve` process and a `falconet certs revoke` one
def test_revoked_while_subscribed_is_cut_at_sighup_and_refused_after(
    served: tuple[Serve, str], certs: Path
) -> None:
    serve, tcp = served
    with (
        grpc.secure_channel(tcp, mtls_credentials(certs, "alice")) as alice_channel,
        grpc.secure_channel(tcp, mtls_credentials(certs, "bob")) as bob_channel,
    ):
        alice, bob = Stream(alice_channel), Stream(bob_channel)
        _publish_over_unix(serve, "before")
        wait_until(lambda: alice.rules == ["before"] and bob.rules == ["before"], what="both streams")

        done = subprocess.run(
            [*FALCONET, "certs", "revoke", "alice", "--dir", str(certs)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "CN=alice" in done.stdout and "revoked" in done.stdout
        serve.proc.send_signal(signal.SIGHUP)
        serve.expect("certificates reloaded")

        alice.thread.join(20)
        assert alice.error is not None and alice.error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "revoked" in str(alice.error.details())
        # Refused thereafter: on the connection it already has, and on a new one.
        assert _refused(alice_channel).code() == grpc.StatusCode.PERMISSION_DENIED
        with grpc.secure_channel(tcp, mtls_credentials(certs, "alice")) as again:
            assert _refused(again).code() == grpc.StatusCode.PERMISSION_DENIED

        _publish_over_unix(serve, "after")
        wait_until(lambda: bob.rules == ["before", "after"], what="bob's stream to carry on")
        assert bob.error is None and bob.thread.is_alive()
        with grpc.secure_channel(tcp, mtls_credentials(certs)) as other:
            assert [a.rule for a in outputs_pb2_grpc.serviceStub(other).get(
                outputs_pb2.request(start=start_oldest()), timeout=10
            )] == ["before", "after"]
        bob.call.cancel()


def test_revocation_needs_the_reload_and_a_bad_crl_keeps_the_old_list(certs: Path, tmp_path: Path) -> None:
    server = start_server(certs)
    try:
        alice = mtls_credentials(certs, "alice")
        server.publish(make_alert(1))
        revoke(certs, "alice")
        with grpc.secure_channel(server.tcp_target, alice) as channel:
            stub = alerts_pb2_grpc.AlertServiceStub(channel)
            assert len(list(stub.GetAll(alerts_pb2.GetAllRequest(), timeout=10))) == 1  # not reloaded yet
            server.server.reload_certificates()
            assert _refused(channel).code() == grpc.StatusCode.PERMISSION_DENIED

            # A CRL from another CA: the reload says why and the previous list stays in force.
            foreign = tmp_path / "foreign"
            init_certs(foreign)
            revoke(foreign, "client")
            shutil.copyfile(foreign / "crl.pem", certs / "crl.pem")
            with pytest.raises(CertError, match="not issued and signed by the CA.*previous revocation list stays"):
                server.server.reload_certificates()
            assert _refused(channel).code() == grpc.StatusCode.PERMISSION_DENIED
        with grpc.secure_channel(server.tcp_target, mtls_credentials(certs, "bob")) as channel:
            stub = alerts_pb2_grpc.AlertServiceStub(channel)
            assert len(list(stub.GetAll(alerts_pb2.GetAllRequest(), timeout=10))) == 1
    finally:
        server.stop()
    with pytest.raises(CertError, match="not issued and signed by the CA"):
        start_server(certs)  # and a server does not start on a CRL it cannot trust
