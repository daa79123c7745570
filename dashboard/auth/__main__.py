"""``python -m dashboard.auth``: hash a team password, check a deployment's access configuration
before the server starts (the same one line the page would show). No Streamlit is imported."""
from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Sequence

from dashboard.auth.config import SECTION, load_secret_files, parse_config
from dashboard.auth.passwords import MIN_PASSWORD_LENGTH, hash_password


def _read_password(stdin: bool) -> str:
    if stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Team password: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("error: the two passwords differ")
    return first


def _check(paths: Sequence[Path]) -> int:
    try:
        config = parse_config(load_secret_files(paths))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if config.problem:
        print(f"error: {config.problem}", file=sys.stderr)
        return 2
    print({"oidc": "ok: OIDC login with an allow-list", "password": "ok: shared team password",
           "none": "ok: no authentication, loopback only"}[config.mode])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboard.auth",
                                     description="Helpers for the dashboard's access control.")
    sub = parser.add_subparsers(dest="command", required=True)
    hp = sub.add_parser("hash-password", help="print the [agg2exp_auth] secret for a shared team password")
    hp.add_argument("--scheme", choices=("scrypt", "pbkdf2_sha256"), default="scrypt")
    hp.add_argument("--stdin", action="store_true", help="read the password from the first line of stdin")
    ck = sub.add_parser("check", help="exit 2 with one line when the access configuration would be refused")
    ck.add_argument("--secrets", type=Path, action="append",
                    help="secrets file (repeatable; default: ~/.streamlit/secrets.toml, ./.streamlit/secrets.toml)")
    args = parser.parse_args(argv)
    if args.command == "check":
        return _check(args.secrets or [Path.home() / ".streamlit" / "secrets.toml",
                                       Path.cwd() / ".streamlit" / "secrets.toml"])
    password = _read_password(args.stdin)
    if len(password) < MIN_PASSWORD_LENGTH:
        print(f"error: the password must have at least {MIN_PASSWORD_LENGTH} characters", file=sys.stderr)
        return 2
    print(f"[{SECTION}]")
    print(f'password_hash = "{hash_password(password, args.scheme)}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
