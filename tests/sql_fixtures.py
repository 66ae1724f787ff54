"""Reader for the SQL fixture files: blocks that start with `# title:` and carry `# key: value` headers.

A block's SQL is everything after its headers up to the next `# title:`, so a fixture can hold any text
(several statements, semicolons, comments, nothing at all) exactly as a researcher would send it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass(frozen=True)
class Fixture:
    file: str
    title: str
    headers: dict[str, str] = field(default_factory=dict)
    sql: str = ""

    @property
    def id(self) -> str:
        return f"{self.file}: {self.title}"


def read_fixtures(folder: str) -> list[Fixture]:
    found = []
    for path in sorted((FIXTURES / folder).glob("*.sql")):
        blocks = path.read_text().split("# title:")[1:]
        for block in blocks:
            title, _, rest = block.partition("\n")
            headers, body = {}, []
            for line in rest.splitlines():
                if line.startswith("# ") and ":" in line and not body:
                    key, _, value = line[2:].partition(":")
                    headers[key.strip()] = value.strip()
                else:
                    body.append(line)
            found.append(Fixture(path.stem, title.strip(), headers, "\n".join(body).strip()))
    return found
