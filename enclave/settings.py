"""Settings: where rules, datasets and the enclave's own state live, read from `ENCLAVE_*` variables.

Defaults suit the embedded demo run from a checkout. State (generated databases, secrets) goes under
`home`, which is git-ignored; secrets are created there on first use with owner-only permissions.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENCLAVE_", frozen=True)
    _secrets: dict[str, bytes] = PrivateAttr(default_factory=dict)

    rules_file: Path = Field(default=PROJECT_ROOT / "query_rules" / "default.yaml")
    datasets_dir: Path = Field(default=PROJECT_ROOT / "datasets")
    home: Path = Field(default=PROJECT_ROOT / ".enclave", description="State: data, secrets, logs.")
    demo_children: int = Field(default=50_000, ge=100, description="Size of the generated demo dataset.")
    audit_dir: Path | None = Field(default=None, description="Where the audit log lives (default: home/audit).")
    checkpoint_every: int = Field(default=64, ge=1, description="Records between signed checkpoints.")
    demo_epsilon_cap: float = Field(default=10.0, gt=0, description="ε granted to the demo researcher.")
    demo_delta_cap: float = Field(default=1e-5, gt=0, description="δ granted to the demo researcher.")
    mode: Literal["demo", "production"] = Field(default="demo", description="production refuses default secrets.")
    key_pepper: SecretStr | None = Field(default=None, description="Secret for hashing API keys (production).")
    max_body_bytes: int = Field(default=65_536, ge=1024, description="Largest request body accepted.")
    max_upload_bytes: int = Field(default=512 * 2**20, ge=1024, description="Largest delivery or consent "
                                  "file upload accepted (all files of one request together).")
    rate_limit: str = Field(default="120/minute", description="Requests per API key (limits notation).")
    redis_url: str | None = Field(default=None, description="Redis for rate limits across workers.")
    database_url: str | None = Field(default=None, description="PostgreSQL state store (postgresql://...), as "
                                     "the enclave's own role; unset: the embedded SQLite store under audit_dir.")
    admin_database_url: str | None = Field(default=None, description="The role that owns the PostgreSQL "
                                           "schema: used only to migrate it and grant the enclave's role.")
    database_pool_size: int = Field(default=8, ge=1, description="PostgreSQL connections per process.")
    log_format: Literal["console", "json"] = Field(default="console", description="Log lines as text "
                                                   "(the demo) or one JSON object a line (production).")
    metrics_token: SecretStr | None = Field(default=None, description="Bearer token a metrics scraper may "
                                            "read /metrics with (auditor keys always may).")
    engine: Literal["duckdb", "spark"] = Field(default="duckdb", description="The engine that runs queries: "
                                               "DuckDB's sandbox, or Spark (pip install 'enclave[spark]', Java 17).")
    spark_master: str = Field(default="local[2]", description="Where the Spark engine runs: local[n], a "
                              "spark:// standalone master, or an sc:// Spark Connect URL.")
    session_idle_minutes: int = Field(default=30, ge=1, le=24 * 60, description="A web page session ends after "
                                      "this long without a request.")
    session_hours: int = Field(default=12, ge=1, le=7 * 24, description="A web page session ends this long "
                               "after sign-in, however busy.")

    @model_validator(mode="after")
    def _no_default_secrets_in_production(self) -> Settings:
        if self.mode == "production":
            pepper = self.key_pepper.get_secret_value() if self.key_pepper else ""
            if len(pepper) < 32:
                raise ValueError("production mode needs ENCLAVE_KEY_PEPPER: a random secret of 32+ characters")
        return self

    @property
    def pepper(self) -> bytes:
        """The API-key pepper: set explicitly in production, generated under home in demo mode."""
        if self.key_pepper is not None:
            return self.key_pepper.get_secret_value().encode()
        return self.secret("key-pepper")

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def audit_path(self) -> Path:
        return self.audit_dir or self.home / "audit"

    def secret(self, name: str) -> bytes:
        """A 32-byte secret kept in `home/secrets/<name>`, created on first use, readable by owner only;
        read once (a secret file is written once and never changes), since requests need them often."""
        if name not in self._secrets:
            path = self.home / "secrets" / name
            if not path.exists():
                write_once(path, secrets.token_bytes(32))
            self._secrets[name] = path.read_bytes()
        return self._secrets[name]


def write_once(path: Path, content: bytes) -> None:
    """Create `path` with owner-only permissions unless it exists; when processes race, the first wins.

    The content goes to a private scratch file first and is then hard-linked into place: link() never
    replaces, so no process ever reads a half-written secret or overwrites another's.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    handle = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(handle, "wb") as out:
        out.write(content)
    try:
        with contextlib.suppress(FileExistsError):
            os.link(scratch, path)
    finally:
        scratch.unlink()
