"""One version, written once (pyproject.toml's [project] version), shown wherever a client or an
operator looks: `/`, the OpenAPI document, the image's labels, the Kubernetes base's image tag;
a CHANGELOG.md that has a section for it; and Alembic revisions that say whether they expand or
contract the schema (the rolling-update rule of deploy/README.md)."""

import ast
import re
import tomllib

import httpx

from devstack.dockerfile import stages
from tests.support.app import ROOT
from tests.support.deploy import load_yaml

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


async def test_the_root_and_the_openapi_document_show_the_release(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/")).json()["version"] == VERSION
    assert (await client.get("/openapi.json")).json()["info"]["version"] == VERSION


def test_the_image_is_labelled_with_the_release_and_its_commit() -> None:
    *_, final = stages()
    labels = " ".join(final.args("LABEL"))
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert 'org.opencontainers.image.revision="${GIT_SHA}"' in labels
    makefile = (ROOT / "Makefile").read_text()
    assert "--build-arg VERSION=$(VERSION)" in makefile
    assert "--build-arg GIT_SHA=" in makefile
    [builder] = [stage for stage in stages() if stage.name == "builder"]
    assert any("pyproject.toml" in copy.split()[:-1] for copy in builder.args("COPY"))


def test_the_kubernetes_base_deploys_the_release() -> None:
    [image] = load_yaml(ROOT / "deploy" / "k8s" / "kustomization.yaml")["images"]
    assert image["newTag"] == VERSION


def test_the_changelog_keeps_a_section_for_what_clients_must_act_on() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert f"## [{VERSION}]" in changelog
    assert "### Clients must act" in changelog


def test_every_migration_says_whether_it_expands_or_contracts_the_schema() -> None:
    revisions = sorted((ROOT / "alembic" / "versions").glob("*.py"))
    assert revisions
    for path in revisions:
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert re.search(r"^Kind: (expand|contract)\b", docstring, re.MULTILINE), path.name
    template = (ROOT / "alembic" / "script.py.mako").read_text()
    assert "Kind: " in template
