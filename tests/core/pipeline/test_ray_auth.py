"""Local Ray is token-authenticated and private (issue #21): the instance the tool starts
ignores an inherited ``RAY_AUTH_MODE=disabled``, keeps a fresh token in a 0600 file and its
sockets and logs in a 0700 folder (never ``~/.ray/auth_token``, readable by every local user,
or the world-writable ``/tmp/ray``); a process without the token cannot submit work to it;
``--ray-address`` without a token is one line. Real Ray on 127.0.0.1 (../shared/TOOLING.md).
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from agg2exp_core.errors import InputError  # noqa: E402
from agg2exp_core.pipeline.ray_executor import RayConfig, RayExecutor, init_local, stop_local  # noqa: E402

pytestmark = pytest.mark.slow  # a Ray start is 15-40 s on the shared 2-core machine

ATTACK = """
import pathlib, sys, ray
ray.init(address=sys.argv[1], _node_ip_address="127.0.0.1", log_to_driver=False)
@ray.remote
def plant(path):
    pathlib.Path(path).write_text("ran")
ray.get(plant.remote(sys.argv[2]), timeout=60)
"""


def attack(address: str, marker: Path, home: Path, **env) -> subprocess.CompletedProcess:
    """Another local process (its own HOME, no token unless given) submitting a task."""
    variables = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    variables.update(HOME=str(home), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", **env)
    try:
        return subprocess.run([sys.executable, "-c", ATTACK, address, str(marker)], env=variables,
                              capture_output=True, text=True, timeout=150)
    except subprocess.TimeoutExpired as err:  # kept retrying without being let in
        return subprocess.CompletedProcess(err.cmd, -1, "", "timed out")


def test_local_ray_needs_its_token_and_keeps_its_files_private(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # inherited from a careless shell profile
    from ray._raylet import AuthenticationMode, get_authentication_mode

    folder = init_local(1, 100, log_to_driver=False)
    try:
        assert get_authentication_mode() == AuthenticationMode.TOKEN
        session = Path(ray._private.worker._global_node.get_session_dir_path())
        assert session.is_relative_to(folder)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        token = folder / "auth_token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text()) == 64
        assert not (home / ".ray").exists(), "no token written where other users read it"
        address = ray._private.worker._global_node.gcs_address
        stranger, wrong = tmp_path / "stranger", tmp_path / "wrong"
        stranger.mkdir()
        wrong.write_text("0" * 64)
        for marker, env in [(tmp_path / "no_token", {}),
                            (tmp_path / "wrong_token", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(wrong)})]:
            out = attack(address, marker, stranger, **env)
            assert out.returncode != 0 and not marker.exists(), out.stderr[-1500:]
        allowed = attack(address, tmp_path / "owner", stranger, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
        assert allowed.returncode == 0 and (tmp_path / "owner").read_text() == "ran", allowed.stderr[-1500:]
    finally:
        stop_local()
    assert not folder.exists() and os.environ.get("RAY_AUTH_MODE") == "disabled"


def test_joining_a_cluster_needs_a_token(tmp_path, monkeypatch):
    import socket

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    with socket.socket() as listener:  # something answers, so only the token is missing
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        for mode, expected in [(None, "no Ray authentication token"), ("disabled", "RAY_AUTH_MODE=disabled")]:
            if mode:
                monkeypatch.setenv("RAY_AUTH_MODE", mode)
            with pytest.raises(InputError, match=expected) as err:
                with RayExecutor(RayConfig(address=address)):
                    pass
            assert str(err.value).startswith("--ray-address: ") and not ray.is_initialized()
