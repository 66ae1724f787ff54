#!/usr/bin/env python3
"""Bootstrap for a fresh machine with only Python 3.11+: the README's two commands.

    python3 run.py demo     the enclave on the embedded demo dataset
    python3 run.py test     the whole test suite (extra arguments go to pytest)

It creates `.venv` beside this file, installs the project with its dev extras there (again only when
`pyproject.toml` changes), then hands over to the installed `enclave` command or to pytest. It uses
nothing but the standard library so that it can run before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".enclave-install-stamp"


def ensure_environment() -> None:
    """Create the virtual environment and install the project when its dependencies changed."""
    if sys.version_info < (3, 11):
        sys.exit("enclave needs Python 3.11 or newer.")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("Creating the virtual environment in .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("Installing enclave and its dependencies ...", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test"}:
        print(__doc__)
        return 2
    ensure_environment()
    command, rest = argv[0], argv[1:]
    program = [str(BIN / "enclave"), "demo"] if command == "demo" else [str(BIN / "python"), "-m", "pytest"]
    args = [*program, *rest]
    return subprocess.run(args, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
