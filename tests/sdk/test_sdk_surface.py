"""The SDK's public surface is exactly what `__all__` lists, every error descends from one root, and importing
the package stays cheap (grpc loads only when a client is used)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import falconet.sdk as sdk
from falconet.sdk import errors

EXPECTED = {
    "Alert",
    "AsyncClient",
    "Backoff",
    "Client",
    "ConfigError",
    "ConnectError",
    "Cursor",
    "DEFAULT_TCP_PORT",
    "DEFAULT_UNIX_SOCKET",
    "FalconetError",
    "InvalidArgument",
    "PermissionDenied",
    "Priority",
    "ServerError",
    "StartPosition",
    "TLSFilesError",
    "Version",
}


def test_all_is_the_public_surface() -> None:
    assert set(sdk.__all__) == EXPECTED
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None
    public = {n for n in dir(sdk) if not n.startswith("_")}
    # Besides __all__, only submodules (loaded on use) are visible.
    extra = {n for n in public - EXPECTED if not inspect.ismodule(getattr(sdk, n))}
    assert not extra, extra
    with pytest.raises(AttributeError):
        sdk.NotAThing  # noqa: B018


def test_errors_form_one_tree() -> None:
    names = [n for n, obj in vars(errors).items() if inspect.isclass(obj) and issubclass(obj, Exception)]
    assert set(errors.__all__) == set(names)
    for name in names:
        assert issubclass(getattr(errors, name), errors.FalconetError)
        # The tree in the module docstring names every error.
        assert name in (errors.__doc__ or "")
    assert issubclass(errors.InvalidArgument, errors.ServerError)
    assert issubclass(errors.PermissionDenied, errors.ServerError)


def test_import_does_not_load_grpc() -> None:
    code = (
        "import sys, falconet.sdk; assert 'grpc' not in sys.modules; "
        "from falconet.sdk import Client; assert 'grpc' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_backoff_grows_and_is_capped() -> None:
    b = sdk.Backoff(initial=0.1, maximum=0.8, multiplier=2.0)
    gen = b.delays()
    delays = [next(gen) for _ in range(8)]
    bounds = [0.1, 0.2, 0.4, 0.8, 0.8, 0.8, 0.8, 0.8]
    for d, hi in zip(delays, bounds, strict=True):
        assert hi / 2 <= d <= hi
    with pytest.raises(ValueError):
        sdk.Backoff(initial=0)
