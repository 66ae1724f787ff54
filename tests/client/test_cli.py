"""The `enclave` command: a fast `--help`, and `check`, `query`, `templates` and `budget` on a remote enclave
(the real service over HTTP, through `enclave.client`) or in process, in the same formats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from enclave.access.keys import ROLES
from enclave.cli import DEFAULT_DATASET, ROLE_NAMES, main, parser
from enclave.client import DEFAULT_DATASET as CLIENT_DEFAULT_DATASET
from enclave.commands.demo import sign_in_block
from enclave.settings import PROJECT_ROOT
from tests.api.conftest import Service
from tests.api.test_template_flow import TEMPLATE
from tests.test_output_hygiene import cli_home  # noqa: F401 - an in-process home on the shared demo data

SQL = "SELECT school, COUNT(*) AS n FROM enrollments GROUP BY school"
REFUSED = "SELECT gender, COUNT(*) AS n\nFROM children\nWHERE person_id = 'x'\nGROUP BY gender"
HEAVY = ("duckdb", "sqlglot", "opendp", "fastapi", "splink", "pandas", "pyarrow", "pydantic", "httpx", "uvicorn")


def _subcommands() -> list[list[str]]:
    """Every command line that ends in a parser: `check`, `audit verify`, `templates run`, ..."""
    found = []

    def walk(current: object, path: list[str]) -> None:
        for action in current._actions:  # type: ignore[attr-defined]
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    found.append([*path, name])
                    walk(sub, [*path, name])

    walk(parser(), [])
    return found


def test_help_loads_nothing_of_the_pipeline() -> None:
    """`enclave --help` and every subcommand's --help, in a fresh interpreter: none of the engine, the
    parser, OpenDP, the service, Splink, pandas or pydantic is imported (only the command's parser is)."""
    probe = ("import json, sys\nfrom enclave.cli import main\nfor argv in json.loads(sys.argv[1]):\n"
             "    try:\n        main([*argv, '--help'])\n    except SystemExit:\n        pass\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe, json.dumps([[], *_subcommands()])], capture_output=True,
                          text=True, check=True, cwd=PROJECT_ROOT, env={"PYTHONPATH": str(PROJECT_ROOT)})
    loaded = set(json.loads(done.stderr.splitlines()[-1]))
    assert loaded.isdisjoint(HEAVY), loaded & set(HEAVY)
    assert "enclave check --epsilon 0.5" in done.stdout  # each help has its example
    assert "templates run 3 --param grade=4" in done.stdout


def test_the_parser_names_the_roles_and_the_dataset_the_enclave_has() -> None:
    assert ROLE_NAMES == ROLES
    assert DEFAULT_DATASET == CLIENT_DEFAULT_DATASET


def test_the_demo_prints_a_sign_in_page_and_key_per_role() -> None:
    keys = {role: f"enc_{role}_secret" for role in ROLES}
    assert sign_in_block("http://127.0.0.1:8000", keys).splitlines() == [
        "web pages: sign in at http://127.0.0.1:8000/ with one of these keys (shown once; only their hashes are kept)",
        "  researcher  http://127.0.0.1:8000/researcher  enc_researcher_secret",
        "  reviewer    http://127.0.0.1:8000/reviewer    enc_reviewer_secret",
        "  steward     http://127.0.0.1:8000/steward     enc_steward_secret",
        "  auditor     http://127.0.0.1:8000/auditor     enc_auditor_secret",
    ]


def _remote(service: Service, capsys: pytest.CaptureFixture[str], *argv: str, who: str = "alice"
            ) -> tuple[int, str, str]:
    """`enclave ARGV --url --key`: its status, stdout and its own stderr lines (not the service's log lines,
    which this process's uvicorn thread writes to the same stream)."""
    status = main([*argv, "--url", service.base_url, "--key", service.keys[who]])
    out, err = capsys.readouterr()
    # (a log line's text and its newline can reach the stream in two writes, so a lone newline is theirs too)
    return status, out, "".join(line for line in err.splitlines(keepends=True)
                                if not line.startswith("20") and line.strip())


def test_remote_check(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _remote(service, capsys, "check", "--epsilon", "0.5", SQL)
    assert (status, err) == (0, "")
    assert out.startswith("accepted (rules ")
    assert "  intervals at 95%:\n    n (count): ± 86.77\n" in out  # before anything is spent
    assert "  deadline: answered " in out
    status, out, _ = _remote(service, capsys, "check", REFUSED)
    assert status == 1
    assert out.splitlines()[:4] == [
        "refused: 1 violation(s)", out.splitlines()[1], "    WHERE person_id = 'x'", "          ^^^^^^^^^"]
    assert out.splitlines()[1].startswith("restricted_column: line 3, col 7: ")
    status, out, _ = _remote(service, capsys, "check", "--json", "--epsilon", "0.5", SQL)
    answer = service.client("alice").post("/v1/queries/check", json={"dataset": "demo", "sql": SQL, "epsilon": 0.5})
    assert (status, json.loads(out)) == (0, answer.json())


def test_remote_query_in_every_format(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _remote(service, capsys, "query", "--epsilon", "0.25", SQL)
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["school", "n"]
    assert lines[-2].startswith("ε=0.25 δ=0 spent; left ε=4.75 δ=1e-05; audit record ")
    assert lines[-1] == "intervals at 95%; '*' marks cells suppressed below 11 persons"
    status, out, _ = _remote(service, capsys, "query", "--json", "--epsilon", "0.25", SQL)
    release = json.loads(out)
    assert (status, release["replayed"], [c["name"] for c in release["columns"]]) == (0, True, ["school", "n"])
    status, out, _ = _remote(service, capsys, "query", "--format", "csv", "--epsilon", "0.25", SQL)
    assert out.splitlines()[0] == "school,n,n_lower,n_upper,n_suppressed"
    status, out, _ = _remote(service, capsys, "query", "--epsilon", "0.1", REFUSED)
    assert status == 1
    assert out.startswith("refused: check_failed: ")
    assert "    WHERE person_id = 'x'\n          ^^^^^^^^^\n" in out


def test_remote_refusals_keep_the_exit_statuses(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _remote(service, capsys, "query", "--dataset", "nope", SQL)
    assert (status, out, err) == (2, "", "No dataset named 'nope'.\n")
    status, out, _ = _remote(service, capsys, "check", "--json", "--dataset", "nope", SQL)
    assert status == 2
    assert json.loads(out) == {"ok": False, "error": {"code": "not_found", "message": "No dataset named 'nope'.",
                                                      "violations": []}}
    status, out, _ = _remote(service, capsys, "query", "--json", "--epsilon", "5", SQL)
    assert (status, json.loads(out)["error"]["code"]) == (1, "epsilon_out_of_range")
    status, out, _ = _remote(service, capsys, "budget", who="reviewer")
    assert (status, out.split(":")[:2]) == (1, ["refused", " forbidden"])
    assert main(["budget", "--url", "http://127.0.0.1:9", "--key", "enc_x"]) == 2
    assert "Cannot reach the enclave at http://127.0.0.1:9" in capsys.readouterr().err


def test_remote_templates_and_budget_from_the_environment(service: Service, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_URL", service.base_url)
    monkeypatch.setenv("ENCLAVE_TOKEN", service.keys["bob"])
    assert main(["templates"]) == 0
    assert capsys.readouterr().out.startswith("no approved templates yet")
    proposed = service.client("bob").post("/v1/templates", json=TEMPLATE).json()
    service.client("reviewer").post(f"/v1/templates/{proposed['id']}/approve", json={"reason": "bounded, public keys"})
    assert main(["templates", "list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["id", "title", "dataset", "ε", "per", "run", "run", "limit", "parameters"]
    assert listing[1].endswith("demo     0.25       3          grade: integer 0..12")
    assert main(["templates", "--json"]) == 0
    assert [t["id"] for t in json.loads(capsys.readouterr().out)] == [proposed["id"]]
    assert main(["templates", "run", str(proposed["id"]), "--param", "grade=3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epsilon"] == 0.25
    assert main(["templates", "run", str(proposed["id"]), "--param", "grade=three"]) == 1
    assert capsys.readouterr().out == "refused: invalid_parameters: grade must be of type integer, not 'three'\n"
    assert main(["budget"]) == 0
    budget = capsys.readouterr().out.splitlines()
    assert budget[0].split() == ["dataset", "purpose", "ε", "left", "δ", "left", "allows", "expires", "active"]
    assert budget[1].split()[:5] == ["demo", "study", "4.75", "of", "5"]
    assert main(["budget", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["epsilon_remaining"] == 4.75


def test_templates_and_budget_in_process(cli_home: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    """Without a URL: as the demo researcher on this machine's enclave, in the same formats."""
    assert main(["templates"]) == 0
    assert capsys.readouterr().out.startswith("no approved templates yet")
    assert main(["budget", "--json"]) == 0
    (grant,) = json.loads(capsys.readouterr().out)
    assert (grant["dataset"], grant["epsilon_cap"], grant["epsilon_remaining"]) == ("demo", 10.0, 10.0)
    assert main(["budget"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:4] == ["demo", "10", "of", "10"]  # no purpose
    assert main(["templates", "run", "1", "--param", "grade=3"]) == 1
    assert capsys.readouterr().out.startswith("refused: template_not_found: ")


def test_weight_and_accuracy_flags(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    """`--weight COLUMN=W` (repeatable) splits ε; `--accuracy COLUMN=HALF_WIDTH` shows the ε it costs and
    is not given with --epsilon; an unknown column is a refusal naming it."""
    sql = "SELECT school, COUNT(*) AS n, SUM(days_absent) AS days FROM enrollments GROUP BY school"
    args = parser().parse_args(["check", "--weight", "n=2", "--weight", "days=0.5", sql])
    assert (args.weights, args.accuracy, args.epsilon) == ({"n": 2.0, "days": 0.5}, None, None)
    for bad in (["--weight", "n"], ["--weight", "n=x"], ["--epsilon", "1", "--accuracy", "n=5"]):
        with pytest.raises(SystemExit):
            parser().parse_args(["check", *bad, sql])
    capsys.readouterr()
    status, out, _ = _remote(service, capsys, "check", "--json", "--epsilon", "0.5", "--weight", "n=3", sql)
    assert status == 0
    assert {q["column"]: q["weight"] for q in json.loads(out)["plan"]["quantities"]}["n"] == 3.0
    status, out, _ = _remote(service, capsys, "check", "--accuracy", "n=100", sql)
    assert status == 0
    assert "  accuracy targets (ε=" in out
    assert "    n: ± 100 (target ± 100)\n" in out
    status, out, _ = _remote(service, capsys, "query", "--json", "--weight", "nope=2", sql)
    assert (status, json.loads(out)["error"]["code"]) == (1, "unknown_output_column")
    assert "'nope'" in json.loads(out)["error"]["message"]


def test_accuracy_flag_in_process(cli_home: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    """Without a URL the flags reach the same plan: the check shows what the target costs."""
    sql = "SELECT school, COUNT(*) AS n FROM enrollments GROUP BY school"
    assert main(["check", "--json", "--accuracy", "n=100", "--weight", "n=2", sql]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    [met] = plan["accuracy_targets"]
    assert (met["column"], met["target"]) == ("n", 100.0)
    assert met["accuracy"] <= 100.0
    assert {q["column"]: q["weight"] for q in plan["quantities"]}["n"] == 2.0
