"""The deploy/ folder, checked without a container runtime: the files parse, agree with each other and with
the operations guide, and every `enclave` command they run is one the CLI knows.

Nothing here builds an image or starts a container (these machines have none); OPERATIONS.md says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml

from enclave.cli import parser
from enclave.settings import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yml"
GUIDE = DEPLOY / "OPERATIONS.md"
DOCKERFILE = DEPLOY / "Dockerfile"
PROMETHEUS = DEPLOY / "prometheus.yml"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"

# The secrets compose must refuse to start without; the guide's custody table names each.
REQUIRED_SECRETS = ("POSTGRES_PASSWORD", "ENCLAVE_APP_DB_PASSWORD", "ENCLAVE_KEY_PEPPER", "REDIS_PASSWORD")
ENCLAVE_SERVICES = {"api", "worker", "migrate"}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")
SECRET_NAME = re.compile(r"PASSWORD|PEPPER|SECRET|TOKEN|AUTH")


# --- reading the files -------------------------------------------------------------------------------

@cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


def guide_table(heading: str) -> list[list[str]]:
    """The rows (cells, stripped) of the first Markdown table under `## heading` in the guide."""
    lines = GUIDE.read_text().splitlines()
    start = lines.index(f"## {heading}")
    rows: list[list[str]] = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    assert len(rows) > 2, f"no table under '## {heading}' in {GUIDE.name}"
    return rows[2:]  # past the header and its separator


def guide_services() -> dict[str, list[str]]:
    """The guide's service table: service name -> its row."""
    table = {}
    for row in guide_table("Services"):
        name = re.fullmatch(r"`([a-z0-9-]+)`", row[0])
        assert name, f"service cell {row[0]!r} is not one `name`"
        table[name.group(1)] = row
    return table


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def shell_commands(block: str) -> list[list[str]]:
    """Each command of a shell code block as its words, continuations joined, comments and operators
    (`|`, `&&`, `;`, `>`) splitting one line into several commands."""
    commands: list[list[str]] = []
    for line in block.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for word in lexer:
            if set(word) <= set("|&;<>"):
                commands.append(current)
                current = []
            else:
                current.append(word)
        commands.append(current)
    return [command for command in commands if command]


# options of `docker compose run` / `exec` that take a value (the service name comes after them)
COMPOSE_VALUE_OPTIONS = {"-v", "--volume", "-e", "--env", "-u", "--user", "-w", "--workdir", "--name",
                         "--entrypoint", "-l", "--label", "-p", "--publish", "--scale", "-f", "--file",
                         "--project-name"}
COMPOSE_SERVICE_COMMANDS = {"up", "start", "stop", "restart", "logs", "ps", "rm", "build", "pull", "kill"}


def compose_invocation(words: list[str]) -> tuple[str, list[str]] | None:
    """(compose subcommand, its arguments) when the words run `docker compose` (or `$C`, the guide's
    shorthand for `docker compose -f deploy/compose.yml`)."""
    if words[0] == "$C":
        rest = words[1:]
    elif words[:2] == ["docker", "compose"]:
        rest = words[2:]
        while rest and rest[0].startswith("-"):
            rest = rest[2:] if rest[0] in COMPOSE_VALUE_OPTIONS else rest[1:]
    else:
        return None
    return (rest[0], rest[1:]) if rest else None


def positional(arguments: list[str]) -> list[str]:
    """The words of a compose command's arguments that are not options or option values."""
    found, skip = [], False
    for word in arguments:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in COMPOSE_VALUE_OPTIONS
        else:
            found.append(word)
    return found


def service_and_command(arguments: list[str]) -> tuple[str | None, list[str]]:
    """For `run` and `exec`: the service, and the command after it, word for word."""
    skip = False
    for index, word in enumerate(arguments):
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in COMPOSE_VALUE_OPTIONS
        else:
            return word, arguments[index + 1:]
    return None, []


def guide_shell_commands() -> list[list[str]]:
    return [words for block in code_blocks(GUIDE.read_text()) for words in shell_commands(block)]


def enclave_invocations_in_shell(commands: list[list[str]]) -> list[list[str]]:
    """The arguments of every `enclave ...` a shell command runs: directly (`enclave X`, `.venv/bin/enclave
    X`), in a running container (`$C exec api enclave X`) or through the image's entry point
    (`$C run --rm migrate X`)."""
    found = []
    for words in commands:
        if words[0] == "enclave" or words[0].endswith("/bin/enclave"):
            found.append(words[1:])
            continue
        invocation = compose_invocation(words)
        if invocation is None or invocation[0] not in ("run", "exec"):
            continue
        service, command = service_and_command(invocation[1])
        if service not in ENCLAVE_SERVICES or not command:
            continue
        if command[0] == "enclave":
            found.append(command[1:])
        elif invocation[0] == "run":  # the entry point is enclave: the words are its arguments
            found.append(command)
    return found


@cache
def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuations joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        assert stages, f"{instruction} before the first FROM"
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def instructions(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [arguments for instruction, arguments in stage if instruction == name]


def dockerfile_env() -> dict[str, str]:
    env = {}
    for arguments in instructions(dockerfile_stages()[-1], "ENV"):
        for pair in shlex.split(arguments):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def enclave_invocations() -> dict[str, list[list[str]]]:
    """Every enclave command line of the deploy files, by where it was found."""
    found: dict[str, list[list[str]]] = {}
    for name, service in services().items():
        if name in ENCLAVE_SERVICES:
            found[f"compose.yml: {name}"] = [service["command"]]
    found["Dockerfile: CMD"] = [json.loads(instructions(dockerfile_stages()[-1], "CMD")[-1])]
    found["OPERATIONS.md"] = enclave_invocations_in_shell(guide_shell_commands())
    prose = re.sub(r"^```.*?^```", "", GUIDE.read_text(), flags=re.MULTILINE | re.DOTALL)
    found["OPERATIONS.md inline code"] = [shlex.split(command) for command in re.findall(r"`enclave ([^`]+)`", prose)]
    return found


def unknown_in_cli(arguments: list[str], top: argparse.ArgumentParser) -> list[str]:
    """What in `enclave <arguments>` the CLI's parser does not know: a subcommand or an option. Walks the
    argparse subparsers: a word that is not an option, in a parser that has subcommands, must be one."""
    current, path, problems, skip = top, ["enclave"], [], False
    for word in arguments:
        if skip:
            skip = False
            continue
        if word.startswith("-"):
            option = word.split("=", 1)[0]
            action = current._option_string_actions.get(option)
            if action is None:
                problems.append(f"{' '.join(path)} {option}")
            else:
                skip = action.nargs != 0 and "=" not in word
            continue
        subcommands = [action for action in current._actions if isinstance(action, argparse._SubParsersAction)]
        if subcommands:
            if word not in subcommands[0].choices:
                return [*problems, f"{' '.join(path)} {word}"]
            current = subcommands[0].choices[word]
            path.append(word)
    return problems


# --- compose and the guide ---------------------------------------------------------------------------

def test_compose_parses_with_the_expected_services():
    assert isinstance(compose(), dict)
    assert set(services()) == {"api", "worker", "migrate", "postgres", "redis", "prometheus"}


def test_guide_names_exactly_the_services_of_compose():
    assert set(guide_services()) == set(services())


def test_every_service_a_guide_command_names_exists():
    named = set()
    for words in guide_shell_commands():
        invocation = compose_invocation(words)
        if invocation is None:
            continue
        command, arguments = invocation
        found = positional(arguments)
        if command in ("run", "exec"):
            named.add(service_and_command(arguments)[0])
        elif command in COMPOSE_SERVICE_COMMANDS:
            named.update(found)
        elif command == "cp":
            named.update(word.split(":", 1)[0] for word in found if ":" in word)
        scale = [arguments[i + 1] for i, word in enumerate(arguments[:-1]) if word == "--scale"]
        named.update(value.split("=", 1)[0] for value in scale)
    assert {"api", "worker", "migrate", "postgres", "redis", "prometheus"} <= named | set(guide_services())
    assert named <= set(services()), f"the guide names services compose does not have: {named - set(services())}"


def test_guide_table_shows_the_command_each_enclave_service_runs():
    table = guide_services()
    for name in ENCLAVE_SERVICES:
        runs = re.findall(r"`enclave ([^`]*)`", table[name][2])
        assert runs, f"the guide's table does not say what {name} runs"
        assert shlex.split(runs[0]) == services()[name]["command"], name


def test_required_secrets_have_no_default():
    text = COMPOSE.read_text()
    for name, modifier in INTERPOLATION.findall(text):
        if SECRET_NAME.search(name):
            assert re.fullmatch(r":\?.+", modifier), f"${{{name}{modifier}}} must be ${{{name}:?message}}"
    used = {name for name, _ in INTERPOLATION.findall(text)}
    assert set(REQUIRED_SECRETS) <= used
    custody = " ".join(row[0] + row[1] for row in guide_table("Secrets and signing-key custody"))
    for name in REQUIRED_SECRETS:
        assert f"`{name}`" in custody, f"the guide's custody table does not name {name}"


def test_no_secret_is_written_into_compose():
    """A secret's value, and the password of a URL, is always an interpolation that must be set."""
    required = re.compile(r"\$\{[A-Z0-9_]+:\?[^}]+\}")
    for name, service in services().items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                assert required.fullmatch(str(value)), f"{name}: {key} is not ${{VAR:?message}}"
            password = re.search(r"://[^:/@]*:([^@]*)@", str(value))
            if password:
                assert required.fullmatch(password.group(1)), f"{name}: {key} has a literal password"


def test_every_long_running_service_has_a_healthcheck():
    table = guide_services()
    for name, service in services().items():
        one_shot = service.get("restart") == "no"
        assert one_shot == table[name][3].startswith("no"), f"{name}: the guide and compose disagree on one-shot"
        if one_shot:
            continue
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name}: its healthcheck is disabled"
        assert check.get("test"), f"{name}: its healthcheck has no test"
    assert [name for name, service in services().items() if service.get("restart") == "no"] == ["migrate"]


def test_enclave_services_are_read_only_non_root_and_internal():
    built = {name for name, service in services().items()
             if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"}
    assert built == ENCLAVE_SERVICES
    networks = compose()["networks"]
    assert networks["internal"]["internal"] is True
    assert not networks["edge"] or not networks["edge"].get("internal")
    for name in ENCLAVE_SERVICES:
        service = services()[name]
        assert service["read_only"] is True, name
        user = str(service["user"]).split(":")[0]
        assert user.isdigit(), f"{name}: user {service['user']!r} is not a numeric UID"
        assert int(user) != 0, f"{name}: runs as root"
        expected = ["internal", "edge"] if name == "api" else ["internal"]
        assert sorted(service["networks"]) == sorted(expected), name
        assert "ALL" in service.get("cap_drop", []), name


def test_only_the_api_publishes_a_port():
    published = {name for name, service in services().items() if service.get("ports")}
    assert published == {"api"}
    for name in ("postgres", "redis", "prometheus"):
        assert services()[name]["networks"] == ["internal"], name
        assert "network_mode" not in services()[name], name


def test_enclave_services_write_only_to_their_volumes_and_tmpfs():
    """With a read-only root, what the enclave writes must land on a mount: exactly ENCLAVE_HOME (a
    volume), PROMETHEUS_MULTIPROC_DIR and /tmp (tmpfs); the worker reads data versions read-only."""
    image_env = dockerfile_env()
    for name in ENCLAVE_SERVICES:
        service = services()[name]
        env = {**image_env, **service["environment"]}
        tmpfs = {entry.split(":", 1)[0] for entry in service["tmpfs"]}
        assert tmpfs == {"/tmp", env["PROMETHEUS_MULTIPROC_DIR"]}, name
        mounts = {}
        for volume in service["volumes"]:
            source, target, *mode = volume.split(":")
            assert source in compose()["volumes"], f"{name}: {source} is not a named volume"
            mounts[target] = mode == ["ro"]
        assert mounts[env["ENCLAVE_HOME"]] is False, f"{name}: ENCLAVE_HOME must be a writable volume"
        data = f"{env['ENCLAVE_HOME']}/data"
        assert mounts.get(data) is (name == "worker"), f"{name}: the data volume"
        assert set(mounts) == {env["ENCLAVE_HOME"], data}, name


def test_api_and_workers_depend_on_the_migration_completing():
    for name in ("api", "worker"):
        depends = services()[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert "ENCLAVE_ADMIN_DATABASE_URL" in services()["migrate"]["environment"]
    for name in ("api", "worker"):
        assert "ENCLAVE_ADMIN_DATABASE_URL" not in services()[name]["environment"], f"{name} has the owner role"
        assert services()[name]["environment"]["ENCLAVE_DATABASE_URL"].startswith("postgresql://enclave_app:")


def test_redis_keeps_nothing():
    command = " ".join(services()["redis"]["command"])
    assert "--save ''" in command
    assert "--appendonly no" in command
    assert not services()["redis"].get("volumes")


def test_state_is_on_named_volumes():
    volumes = compose()["volumes"]
    assert {"enclave-home", "enclave-data", "enclave-postgres"} <= set(volumes)
    assert "enclave-postgres:/var/lib/postgresql/data" in services()["postgres"]["volumes"]


# --- prometheus --------------------------------------------------------------------------------------

def test_prometheus_scrapes_the_api_metrics():
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = [job for job in config["scrape_configs"]
            if any("api:8000" in static["targets"] for static in job.get("static_configs", []))]
    assert len(jobs) == 1
    assert jobs[0].get("metrics_path", "/metrics") == "/metrics"
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services()["prometheus"]["volumes"]


# --- the Dockerfile ----------------------------------------------------------------------------------

def test_dockerfile_is_multi_stage_on_python_slim():
    stages = dockerfile_stages()
    assert len(stages) >= 2
    for stage in stages:
        assert instructions(stage, "FROM")[0].split()[0] == "python:3.11-slim"
    assert any("pip install ." in run for run in instructions(stages[0], "RUN"))
    assert any(arguments.startswith("--from=") for arguments in instructions(stages[-1], "COPY"))


def test_dockerfile_runs_as_a_numeric_non_root_user():
    users = instructions(dockerfile_stages()[-1], "USER")
    assert users, "the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)
    assert users[-1] == services()["api"]["user"]


def test_dockerfile_entry_point_is_the_enclave_console_script():
    stage = dockerfile_stages()[-1]
    assert json.loads(instructions(stage, "ENTRYPOINT")[-1]) == ["enclave"]
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["enclave"] == "enclave.cli:main"
    assert json.loads(instructions(stage, "CMD")[-1])[0] == "serve"


def test_dockerfile_healthcheck_uses_python_against_healthz():
    check = instructions(dockerfile_stages()[-1], "HEALTHCHECK")
    assert len(check) == 1
    command = json.loads(check[0].split("CMD", 1)[1])
    assert command[0] == "python"
    assert "/healthz" in command[-1]
    for stage in dockerfile_stages():
        assert not any("curl" in arguments for _, arguments in stage), "slim has no curl, and the image needs none"


def test_dockerfile_sets_the_production_environment_and_writable_paths():
    env = dockerfile_env()
    assert env["ENCLAVE_MODE"] == "production"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    for key in ("ENCLAVE_HOME", "PROMETHEUS_MULTIPROC_DIR", "ENCLAVE_RULES_FILE", "ENCLAVE_DATASETS_DIR"):
        assert env.get(key, "").startswith("/"), key
    assert "ENCLAVE_KEY_PEPPER" not in env, "a secret in the image"
    runs = " ".join(instructions(dockerfile_stages()[-1], "RUN"))
    for path in (env["ENCLAVE_HOME"], f"{env['ENCLAVE_HOME']}/data", env["PROMETHEUS_MULTIPROC_DIR"]):
        assert path in runs, f"{path} is not created (owned by the user) in the image"


def test_dockerignore_lets_in_only_what_the_image_needs():
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "enclave", "query_rules", "datasets"}
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), flags=re.MULTILINE):
        for source in copied.split():
            assert source.rstrip("/") in allowed, f"the Dockerfile copies {source}, which .dockerignore leaves out"


# --- the CLI: every enclave command the files run must exist -----------------------------------------

def test_the_command_finder_sees_what_the_guide_runs():
    """A guard on the parser of the guide: it must find the commands we know are there."""
    found = {" ".join(words[:2]) for words in enclave_invocations()["OPERATIONS.md"]}
    assert {"keys create", "keys revoke", "audit verify", "audit export"} <= found
    inline = {" ".join(words[:2]) for words in enclave_invocations()["OPERATIONS.md inline code"]}
    assert {"link rekey", "migrate"} <= inline
    assert any(words[0] == "restore" for words in enclave_invocations()["OPERATIONS.md"])
    assert unknown_in_cli(["keys", "create", "--name", "n", "--role", "steward"], parser()) == []
    assert unknown_in_cli(["no-such-command"], parser()) == ["enclave no-such-command"]
    assert unknown_in_cli(["serve", "--no-such-option", "1"], parser()) == ["enclave serve --no-such-option"]


def test_every_enclave_command_of_the_deploy_files_is_known_to_the_cli():
    top = parser()
    problems = {}
    for where, invocations in enclave_invocations().items():
        for arguments in invocations:
            unknown = unknown_in_cli(arguments, top)
            if unknown:
                problems[f"{where}: enclave {' '.join(arguments)}"] = unknown
    assert not problems, "commands the CLI does not have:\n" + "\n".join(f"  {k} -> {v}" for k, v in problems.items())


# --- docker compose, where its client is installed (it needs no daemon to check a file) --------------

def compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def run_compose_config(secrets: dict[str, str]) -> subprocess.CompletedProcess:
    client = compose_client()
    if client is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env = {key: value for key, value in os.environ.items() if key not in REQUIRED_SECRETS}
    env.pop("ENCLAVE_IMAGE", None)
    env.pop("ENCLAVE_API_PUBLISH", None)
    return subprocess.run([*client, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                          env={**env, **secrets}, cwd=PROJECT_ROOT, timeout=60, check=False)


DUMMY_SECRETS = {name: f"test-only-{name.lower()}-0123456789abcdef0123456789" for name in REQUIRED_SECRETS}


def test_docker_compose_accepts_the_file():
    result = run_compose_config(DUMMY_SECRETS)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", REQUIRED_SECRETS)
def test_docker_compose_refuses_to_start_without_a_required_secret(missing: str):
    result = run_compose_config({name: value for name, value in DUMMY_SECRETS.items() if name != missing})
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr


def test_guide_exists_beside_the_files():
    for path in (COMPOSE, GUIDE, DOCKERFILE, PROMETHEUS, DOCKERIGNORE):
        assert Path(path).is_file(), path
