"""Shared helpers of the install-path tests: paths, a helm runner, YAML and RBAC utilities."""

from __future__ import annotations

import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "bem-operator"
MANIFESTS = ROOT / "manifests"
# The locally built helm reports no Kubernetes version of its own (v1.20 by default), so
# offline renders name the version the local control plane runs.
KUBE_VERSION = "1.34.0"


@dataclass(frozen=True)
class Helm:
    """helm against the chart; offline unless given a cluster environment."""

    binary: Path
    env: dict[str, str] | None = None

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([str(self.binary), *args], capture_output=True, text=True,
                             timeout=180, env=self.env)
        if check and out.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({out.returncode}):\n"
                                 f"{out.stdout}\n{out.stderr}")
        return out

    def template(self, *args: str, release: str = "bem-operator",
                 namespace: str = "bem-system") -> list[dict[str, Any]]:
        """Rendered objects of the chart, in order."""
        out = self.run("template", release, str(CHART), "--namespace", namespace,
                       "--kube-version", KUBE_VERSION, *args)
        return [d for d in yaml.safe_load_all(out.stdout) if d]


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def rule_set(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """RBAC rules flattened to (apiGroup, resource, verb): equal sets grant the same."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def parse_dockerfile(name: str) -> DockerfileParser:
    """A Dockerfile of the repository root, parsed (build ARGs resolved in FROM)."""
    # The parser reads lazily and seeks: give it an in-memory copy.
    return DockerfileParser(fileobj=io.BytesIO((ROOT / name).read_bytes()))


def copy_sources(parser: DockerfileParser) -> list[str]:
    """Paths a Dockerfile copies from the build context (not from other stages)."""
    sources = []
    for instruction in parser.structure:
        if instruction["instruction"] != "COPY" or "--from=" in instruction["value"]:
            continue
        *srcs, _dest = instruction["value"].split()
        sources += [s for s in srcs if not s.startswith("--")]
    return sources


def entry_command(parser: DockerfileParser) -> list[str]:
    """ENTRYPOINT followed by CMD, both in exec form, as the container would start."""
    command: list[str] = []
    for wanted in ("ENTRYPOINT", "CMD"):
        found = [i["value"] for i in parser.structure if i["instruction"] == wanted]
        if found:
            command += json.loads(found[-1])
    return command
