"""Tables for people of what the researcher's commands list, remote or in process: templates, budget."""

from __future__ import annotations

from collections.abc import Sequence

from enclave.client import Budget, Template
from enclave.client.render import table


def _parameter(template: Template) -> str:
    parts = []
    for p in template.parameters:
        allowed = "|".join(map(str, p.choices)) if p.choices else f"{p.min:g}..{p.max:g}"
        parts.append(f"{p.name}: {p.type} {allowed}")
    return "; ".join(parts) or "none"


def templates_table(templates: Sequence[Template]) -> str:
    if not templates:
        return "no approved templates yet (a researcher proposes one, a reviewer approves it)"
    rows = [(t.id, t.title, t.dataset, f"{t.epsilon:g}", t.run_limit, _parameter(t)) for t in templates]
    return table(("id", "title", "dataset", "ε per run", "run limit", "parameters"), rows) + (
        "\n\nrun one: enclave templates run ID --param NAME=VALUE")


def budget_table(grants: Sequence[Budget]) -> str:
    if not grants:
        return "no grants: a steward grants a dataset (enclave grants create)"
    rows = [(g.dataset, g.purpose, f"{g.epsilon_remaining:g} of {g.epsilon_cap:g}",
             f"{g.delta_remaining:.2g} of {g.delta_cap:.2g}", "ad hoc and templates" if g.adhoc else "templates only",
             g.expires or "never", "yes" if g.active else "no") for g in grants]
    return table(("dataset", "purpose", "ε left", "δ left", "allows", "expires", "active"), rows)


def parameters_of(template: Template | None, specs: Sequence[str]) -> dict[str, str | int | float | bool]:
    """NAME=VALUE arguments as the template's declared types (the enclave checks names and ranges)."""
    declared = {p.name: p for p in template.parameters} if template else {}
    values: dict[str, str | int | float | bool] = {}
    for spec in specs:
        name, equals, text = spec.partition("=")
        if not equals:
            raise ValueError(f"--param {spec!r}: write NAME=VALUE")
        try:
            values[name] = declared[name].parse(text) if name in declared else text
        except ValueError:
            raise ValueError(f"{name} must be of type {declared[name].type}, not {text!r}") from None
    return values
