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
    assert set(SERVICES) == {"chain", "deployer", "redis", "postgres", "api", "worker", "beat", "dashboard"}


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
    for name in ("postgres", "redis", "chain", "api"):
        assert "healthcheck" in SERVICES[name], name
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
        "FEDLEDGER_JWT_SECRET",
        "FEDLEDGER_AGGREGATOR_PRIVATE_KEY",
        "FEDLEDGER_MODEL_SIGNER_PRIVATE_KEY",
        "FEDLEDGER_AGGREGATOR_ADDRESS",
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
    assert SERVICES["deployer"]["environment"]["FEDLEDGER_ENV"] == "${FEDLEDGER_ENV:-production}"
    assert COMPOSE["x-fedledger-env"]["FEDLEDGER_ENV"] == "${FEDLEDGER_ENV:-production}"
