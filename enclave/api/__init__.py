"""api: the HTTP edge only. `create_app(settings)` builds the service; routes per role in routes/."""

from enclave.api.app import create_app

__all__ = ["create_app"]
