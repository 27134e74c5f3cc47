"""Reading the deployment files for the static tests: no Docker engine, no cluster needed."""

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from api.core.config import Settings
from tests.helpers import ROOT

SETTINGS = frozenset(name.upper() for name in Settings.model_fields)
# Read by uvicorn itself (the image's CMD), not by the app's settings.
SERVER_VARIABLES = frozenset({"WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"})
APP_UID = 10001  # deploy/Dockerfile's ARG APP_UID


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(ROOT / "compose.yaml")
    return document


def interpolate(value: str) -> str:
    """Compose's interpolation with nothing set: `${NAME:-default}` is its default."""
    return re.sub(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}", lambda m: m[2] or "", value)


def compose_variables() -> set[str]:
    """Every variable compose.yaml interpolates."""
    return set(re.findall(r"\$\{([A-Z0-9_]+)", (ROOT / "compose.yaml").read_text()))


def check_jsonschema(builtin: str, path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with one of its vendored schemas (`vendor.compose-spec`, ...)."""
    command = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run(
        [str(command), "--builtin-schema", builtin, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
