"""docker-compose.yml against the code: no Docker engine runs here, so the file is checked statically.

Every service's image or build context exists, every command names something the code provides, every
FEDLEDGER_ setting is a real setting, and start order waits on health checks.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.main import get_command

from app.cli import app
from fedledger.config import PROJECT_ROOT, Settings

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SETTING_NAMES = {f"FEDLEDGER_{name.upper()}" for name in Settings.model_fields}
DEPLOY_JS = (
    (PROJECT_ROOT / "blockchain/scripts/deployLib.js").read_text()
    + (PROJECT_ROOT / "blockchain/scripts/deploy.js").read_text()
    + (PROJECT_ROOT / "blockchain/hardhat.config.js").read_text()
)


def test_the_expected_services_exist() -> None:
    assert set(SERVICES) == {
        "chain",
        "deployer",
        "redis",
        "postgres",
        "minio",
        "api",
        "worker",
        "beat",
        "dashboard",
    }


def test_every_service_has_an_image_or_a_build_context_with_a_dockerfile() -> None:
    for name, service in SERVICES.items():
        if "image" in service:
            assert re.match(r"^[a-z0-9./-]+:[\w.-]+$", service["image"]), name
        else:
            context = PROJECT_ROOT / service["build"]
            assert (context / "Dockerfile").exists(), name


def test_python_service_commands_are_real_cli_commands() -> None:
    commands = get_command(app).commands  # type: ignore[attr-defined]
    for name in ("api", "worker", "dashboard"):
        command = SERVICES[name]["command"]
        words = " ".join(command).replace("&&", " ").split()
        for i, word in enumerate(words):
            if word == "fedledger":
                assert words[i + 1] in commands, f"{name}: fedledger {words[i + 1]} does not exist"
    beat = SERVICES["beat"]["command"]
    assert beat[:3] == ["celery", "-A", "aggregator.worker.celery_app"]
    __import__("aggregator.worker.celery_app")


def test_chain_services_run_files_that_exist() -> None:
    assert "scripts/deploy.js" in SERVICES["deployer"]["command"]
    assert (PROJECT_ROOT / "blockchain/scripts/deploy.js").exists()


def test_every_setting_name_is_a_real_setting_or_read_by_the_deploy_script() -> None:
    anchors = COMPOSE["x-fedledger-env"]
    for key in anchors:
        assert key in SETTING_NAMES, f"{key} is not a field of fedledger.config.Settings"
    for key in SERVICES["deployer"]["environment"]:
        assert key in DEPLOY_JS, f"{key} is not read by the deploy script"
    template = (PROJECT_ROOT / ".env.template").read_text()
    for key in SETTING_NAMES:
        assert f"\n{key}=" in template, f"{key} is not documented in .env.template"


def test_start_order_waits_on_health() -> None:
    for name in ("postgres", "redis", "minio", "chain", "api"):
        assert "healthcheck" in SERVICES[name], name
    assert SERVICES["api"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert SERVICES["api"]["depends_on"]["deployer"]["condition"] == "service_completed_successfully"
    for name in ("worker", "beat", "dashboard"):
        assert SERVICES[name]["depends_on"]["api"]["condition"] == "service_healthy"


def test_dockerfiles_copy_what_the_package_needs() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    packages = re.findall(r'"(\w+)\*"', (PROJECT_ROOT / "pyproject.toml").read_text())
    for package in packages:
        assert f"COPY {package} ./{package}" in dockerfile, package
    assert Path(PROJECT_ROOT / "blockchain/package-lock.json").exists()


def test_every_variable_the_compose_file_reads_is_documented_in_the_env_template() -> None:
    text = (PROJECT_ROOT / "docker-compose.yml").read_text()
    template = (PROJECT_ROOT / ".env.template").read_text()
    variables = set(re.findall(r"\$\{(\w+)", text))
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "FEDLEDGER_AGGREGATOR_ADDRESS"} <= variables
    for name in variables:
        assert f"\n{name}=" in template, f"{name} is read by docker-compose.yml but not in .env.template"


def test_secrets_and_the_aggregator_address_are_required_not_defaulted() -> None:
    text = (PROJECT_ROOT / "docker-compose.yml").read_text()
    for name in (
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "FEDLEDGER_JWT_SECRET",
        "FEDLEDGER_AGGREGATOR_PRIVATE_KEY",
        "FEDLEDGER_MODEL_SIGNER_PRIVATE_KEY",
        "FEDLEDGER_AGGREGATOR_ADDRESS",
        "FEDLEDGER_GUARDIAN_ADDRESS",
    ):
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses and all(use.startswith(":?") for use in uses), (
            f"{name} must be required (${{{name}:?...}})"
        )


def test_redis_requires_its_password_and_every_client_sends_it() -> None:
    redis = SERVICES["redis"]
    assert "--requirepass" in " ".join(redis["command"])
    assert "REDIS_PASSWORD" in " ".join(redis["healthcheck"]["test"])
    anchors = COMPOSE["x-fedledger-env"]
    for key in ("FEDLEDGER_BROKER_URL", "FEDLEDGER_REDIS_URL"):
        assert anchors[key].startswith("redis://:${REDIS_PASSWORD"), key


def test_the_deployer_runs_in_the_services_mode() -> None:
    assert SERVICES["deployer"]["environment"]["FEDLEDGER_ENV"] == COMPOSE["x-fedledger-env"]["FEDLEDGER_ENV"]


_SUBSTITUTION = re.compile(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}")


def _dotenv(text: str) -> dict[str, str]:
    pairs = (
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def _interpolate(value: object, env: dict[str, str]) -> str:
    """Compose's substitution of ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` from .env."""

    def one(match: re.Match[str]) -> str:
        name, kind, arg = match.group(1), match.group(2), match.group(3)
        given = env.get(name, "")
        if kind == ":?" and not given:
            raise AssertionError(f"compose refuses to start: {arg}")
        return given or (arg if kind == ":-" else "")

    return _SUBSTITUTION.sub(one, str(value))


def _documented_compose_variables() -> list[str]:
    readme = (PROJECT_ROOT / "README.md").read_text()
    start = readme.index("Copy `.env.template` to `.env` and set:")
    sentence = readme[start : readme.index(".\n", start)]
    return re.findall(r"`([A-Z][A-Z0-9_]+)`", sentence)


def test_the_documented_variables_give_a_production_setup_in_which_an_operator_runs_rounds() -> None:
    """Issue 22 item 7: .env copied from .env.template set FEDLEDGER_ENV=development over compose's production
    default, and FEDLEDGER_OPERATOR_ADDRESSES (not among the documented variables) left nobody able to open
    a round. Here: the README's steps, then compose's substitution, then the settings every service reads."""
    from eth_account import Account

    from middleware.auth import ROLE_OPERATOR, roles_for

    documented = _documented_compose_variables()
    operator = Account.create()
    aggregator = Account.create()
    guardian = Account.create()
    values = {
        "POSTGRES_PASSWORD": "pg-" + "x" * 20,
        "REDIS_PASSWORD": "redis-" + "y" * 20,
        "MINIO_ROOT_PASSWORD": "minio-" + "m" * 20,
        "FEDLEDGER_JWT_SECRET": "z" * 48,
        "FEDLEDGER_AGGREGATOR_PRIVATE_KEY": aggregator.key.hex(),
        "FEDLEDGER_MODEL_SIGNER_PRIVATE_KEY": Account.create().key.hex(),
        "FEDLEDGER_AGGREGATOR_ADDRESS": aggregator.address,
        "FEDLEDGER_GUARDIAN_ADDRESS": guardian.address,
        "FEDLEDGER_OPERATOR_ADDRESSES": operator.address,
    }
    assert set(documented) == set(values), documented
    dotenv = {**_dotenv((PROJECT_ROOT / ".env.template").read_text()), **values}
    # Every variable compose requires (${VAR:?...}) is one the README lists.
    required = {m.group(1) for m in _SUBSTITUTION.finditer(yaml.safe_dump(COMPOSE)) if m.group(2) == ":?"}
    assert required <= set(documented), required - set(documented)

    for name in ("api", "worker", "beat", "dashboard"):
        environment = {k: _interpolate(v, dotenv) for k, v in SERVICES[name]["environment"].items()}
        settings = Settings(
            _env_file=None, **{k.removeprefix("FEDLEDGER_").lower(): v for k, v in environment.items()}
        )  # type: ignore[call-arg]
        assert settings.env.value == "production", name
        settings.check_production()  # the secrets the README asks for are accepted
        assert ROLE_OPERATOR in roles_for(settings, operator.address), name
    deployer = {k: _interpolate(v, dotenv) for k, v in SERVICES["deployer"]["environment"].items()}
    assert deployer["FEDLEDGER_ENV"] == "production"
    assert deployer["FEDLEDGER_AGGREGATOR_ADDRESS"] == aggregator.address
    assert deployer["FEDLEDGER_GUARDIAN_ADDRESS"] == guardian.address
