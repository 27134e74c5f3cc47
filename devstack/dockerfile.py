"""deploy/Dockerfile read as Docker reads it, for what must match the image: the deployment
tests, and the benchmarks that run the image's command outside a container."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from devstack import ROOT

DOCKERFILE = ROOT / "deploy" / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    def env(self) -> dict[str, str]:
        """The stage's ENV values, as written (`${GIT_SHA}` and `$PATH` unexpanded)."""
        pairs: dict[str, str] = {}
        for args in self.args("ENV"):
            pairs.update(re.findall(r"(\w+)=(\S+)", args))
        return pairs


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comment lines dropped (comment
    lines inside a continued instruction too, as Docker does)."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        name, _, args = pending.partition(" ")
        found.append((name.upper(), args.strip()))
        pending = ""
    return found


def global_args(found: list[tuple[str, str]]) -> dict[str, str]:
    """The ARGs before the first FROM among `found` instructions, with their defaults."""
    args = {}
    for name, value in found:
        if name == "FROM":
            break
        if name == "ARG":
            key, _, default = value.partition("=")
            args[key] = default
    return args


def stages() -> list[Stage]:
    """The build's stages in order; the last one is the image."""
    steps = instructions()
    defaults = global_args(steps)
    found: list[Stage] = []
    for name, args in steps:
        if name == "FROM":
            base, _, alias = args.partition(" AS ")
            found.append(
                Stage(
                    base=re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], base),
                    name=alias.strip(),
                )
            )
        elif found:
            found[-1].instructions.append((name, args))
    return found
