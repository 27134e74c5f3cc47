"""The release: pyproject.toml's [project] version, the one place it is written. The image
copies pyproject.toml beside the code; `/`, the OpenAPI document and the image's labels show it."""

import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def project_version() -> str:
    with PYPROJECT.open("rb") as file:
        version: str = tomllib.load(file)["project"]["version"]
    return version


VERSION = project_version()
