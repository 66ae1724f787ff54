"""Settings: where rules, datasets and the enclave's own state live, read from `ENCLAVE_*` variables.

Defaults suit the embedded demo run from a checkout. State (generated databases, secrets) goes under
`home`, which is git-ignored; secrets are created there on first use with owner-only permissions.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENCLAVE_", frozen=True)

    rules_file: Path = Field(default=PROJECT_ROOT / "query_rules" / "default.yaml")
    datasets_dir: Path = Field(default=PROJECT_ROOT / "datasets")
    home: Path = Field(default=PROJECT_ROOT / ".enclave", description="State: data, secrets, logs.")
    demo_children: int = Field(default=50_000, ge=100, description="Size of the generated demo dataset.")

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def secret(self, name: str) -> bytes:
        """A 32-byte secret kept in `home/secrets/<name>`, created on first use, readable by owner only."""
        path = self.home / "secrets" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            scratch = path.with_name(f".{name}.{secrets.token_hex(8)}")
            handle = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(handle, "wb") as out:
                out.write(secrets.token_bytes(32))
            # link() refuses to replace: when two processes race, both read the one that won.
            with contextlib.suppress(FileExistsError):
                os.link(scratch, path)
            scratch.unlink()
        return path.read_bytes()
