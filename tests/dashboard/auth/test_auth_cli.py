"""``python -m dashboard.auth``: hash-password and check, as an operator runs them."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from access import PASSWORD
from dashboard.auth import passwords

ROOT = Path(__file__).resolve().parents[3]

def test_hash_password_command(tmp_path):
    run = subprocess.run([sys.executable, "-m", "dashboard.auth", "hash-password", "--stdin"], cwd=ROOT,
                         input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    secret = tomllib.loads(run.stdout)["agg2exp_auth"]["password_hash"]
    assert passwords.verify_password(PASSWORD, secret) and PASSWORD not in run.stdout
    short = subprocess.run([sys.executable, "-m", "dashboard.auth", "hash-password", "--stdin"], cwd=ROOT,
                           input="short\n", capture_output=True, text=True, timeout=60)
    assert short.returncode == 2 and "at least 12" in short.stderr and short.stdout == ""
    with pytest.raises(ValueError, match="at least 12"):
        passwords.hash_password("short")


def test_check_command_refuses_before_the_server_starts(tmp_path, password_hash):
    def check(text: str):
        secrets = tmp_path / "secrets.toml"
        secrets.write_text(text)
        return subprocess.run([sys.executable, "-m", "dashboard.auth", "check", "--secrets", str(secrets)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    empty = check('[agg2exp_auth]\npassword_hash = ""\n')
    assert empty.returncode == 2 and empty.stdout == ""
    assert empty.stderr.count("\n") == 1 and "password_hash is empty" in empty.stderr
    orphan = check('[agg2exp_auth]\nallowed_domains = ["hospital.org"]\n')
    assert orphan.returncode == 2 and "no [auth] section" in orphan.stderr
    broken = check("[agg2exp_auth\n")
    assert broken.returncode == 2 and "cannot be read as TOML" in broken.stderr
    good = check(f'[agg2exp_auth]\npassword_hash = "{password_hash}"\n')
    assert good.returncode == 0 and "shared team password" in good.stdout


def test_only_the_gates_import_streamlit():
    """The command line and the pure rules load without Streamlit (a server's ExecStartPre stays light)."""
    probe = ("import sys, dashboard.auth.__main__, dashboard.auth.throttle, dashboard.auth.network; "
             "print('streamlit' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr
    importers = sorted(p.name for p in (ROOT / "dashboard" / "auth").glob("*.py") if "import streamlit" in p.read_text())
    assert importers == ["gates.py"]
