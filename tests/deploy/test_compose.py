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
    assert beat[:3] == ["celery", "-A", "aggregator.celery_app"]
    __import__("aggregator.celery_app")


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
