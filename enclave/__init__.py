"""enclave: a secure statistical query enclave. The pipeline's stages, in order, are in `enclave.pipeline`.

Importing the package silences sqlglot's logger, once, for every entry point (the service, the command,
the benches). sqlglot logs the text it parses ("'EXPLAIN ...' contains unsupported syntax. Falling back
to parsing as a 'Command'", optimizer and generator warnings), so a researcher's SQL would reach stderr
and the server log. The researcher's SQL belongs in the audit log only; everything sqlglot could tell us
is already a positioned violation of the check (which fails closed). The check is not the only place
that parses untrusted SQL (`templates.model` parses a proposal's parameters), which is why this is done
here rather than in `enclave.check`.
"""

from __future__ import annotations

import logging


def _silence_sqlglot() -> None:
    """No sqlglot record is created at any level, and none propagates to the root's handlers."""
    sqlglot_logger = logging.getLogger("sqlglot")
    sqlglot_logger.setLevel(logging.CRITICAL + 1)
    sqlglot_logger.propagate = False
    if not any(isinstance(h, logging.NullHandler) for h in sqlglot_logger.handlers):
        sqlglot_logger.addHandler(logging.NullHandler())  # so logging's last-resort handler never prints either


_silence_sqlglot()
