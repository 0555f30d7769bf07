"""constraints.txt pins the whole resolution `make install` makes: every dependency pyproject.toml declares
has exactly one pinned version there, inside its declared range, and the installs use the file."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from fedledger.config import PROJECT_ROOT

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
CONSTRAINTS = (PROJECT_ROOT / "constraints.txt").read_text()


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line)
        assert match, f"constraints.txt: {line!r} is not name==version"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = match.group(2)
    return pins


def _declared() -> list[Requirement]:
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    # What `make install` installs: the dependencies and the dev extra (which pulls the flower extra).
    listed = [*project["dependencies"], *extras["dev"], *extras["flower"]]
    requirements = [Requirement(text) for text in listed]
    return [r for r in requirements if canonicalize_name(r.name) != "fedledger"]


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    pins = _pins()
    for requirement in _declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {requirement}"
        )


def test_the_installs_use_the_constraints() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert "-c constraints.txt -e '.[dev]'" in makefile
    assert re.search(r"\$\(STAMPS\)/python: .*constraints\.txt", makefile)
    assert "-c constraints.txt ." in (PROJECT_ROOT / "Dockerfile").read_text()
