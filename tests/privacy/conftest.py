"""The privacy tests plan real queries of the demo dataset, with the disclosure tests' fixture."""

from tests.disclosure.conftest import rewritten

__all__ = ["rewritten"]
