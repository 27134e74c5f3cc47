""".github/workflows/ci.yml cannot run here; this checks that it is a valid workflow (the
GitHub workflow schema vendored by check-jsonschema) and that it runs the README's commands."""

import re
from typing import Any

from tests.support.app import ROOT
from tests.support.deploy import check_jsonschema, load_yaml

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def workflow() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(WORKFLOW)
    return document


def commands(job: str) -> list[str]:
    return [step["run"] for step in workflow()["jobs"][job]["steps"] if "run" in step]


def test_valid_against_the_github_workflow_schema() -> None:
    result = check_jsonschema("vendor.github-workflows", WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runs_on_every_push_on_a_hosted_ubuntu_runner() -> None:
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as "on".
    document: dict[Any, Any] = load_yaml(WORKFLOW)
    triggers = document["on"] if "on" in document else document[True]
    assert set(triggers) == {"push", "pull_request"}
    for job in workflow()["jobs"].values():
        assert job["runs-on"].startswith("ubuntu-")
        assert job["timeout-minutes"] <= 60


def test_the_same_commands_as_the_readme() -> None:
    assert commands("test") == ["make test"]
    assert commands("compose") == ["make image", "make compose-test"]
    readme = (ROOT / "README.md").read_text()
    for command in (
        "make test",
        "make run",
        "make image",
        "make compose-test",
        "docker compose up",
    ):
        assert f"`{command}`" in readme or f"{command}\n" in readme, command
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")


def test_the_makefile_has_those_targets_and_installs_through_sudo_when_not_root() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("test", "run", "image", "compose-test"):
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), target
    assert 'sudo="sudo -n"' in makefile
