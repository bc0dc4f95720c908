"""Checks of the Dockerfiles without a container engine: inputs, pins, users, stages, health."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from typing import Any

import pytest

from .support import ROOT, copy_sources, parse_dockerfile

DOCKERFILES = {"Dockerfile.operator": "operator", "Dockerfile.runtime": "runtime"}
PINNED_TAG = re.compile(r"^[\w.-]+/?[\w.-]*:\d+\.\d+\.\d+[\w.-]*$")
INSTALLS = re.compile(r"\b(pip3?|apt-get|apt|apk|uv) +install\b")


def _stages(parser: Any) -> list[list[dict[str, Any]]]:
    """Instructions grouped by build stage (FROM starts one)."""
    stages: list[list[dict[str, Any]]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages and instruction["instruction"] != "COMMENT":
            stages[-1].append(instruction)
    return stages


def _dockerignore_allowlist() -> set[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines, ".dockerignore should start from an allowlist ('*')"
    return {line[1:].rstrip("/") for line in lines if line.startswith("!")}


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copied_path_exists_and_is_in_the_build_context(name: str) -> None:
    sources = copy_sources(parse_dockerfile(name))
    assert sources
    allowed = _dockerignore_allowlist()
    for source in sources:
        assert (ROOT / source).exists(), f"{name} copies {source}, which does not exist"
        assert source.rstrip("/").split("/")[0] in allowed, (
            f"{name} copies {source}, but .dockerignore leaves it out of the build context")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_images_are_pinned(name: str) -> None:
    for image in parse_dockerfile(name).parent_images:
        assert "latest" not in image and PINNED_TAG.match(image), (
            f"{name}: base image {image!r} must carry a full version tag")


def _final_install_run(name: str) -> str:
    [run] = [i["value"] for i in _stages(parse_dockerfile(name))[-1]
             if i["instruction"] == "RUN" and INSTALLS.search(i["value"])]
    return run


@pytest.mark.parametrize("name", DOCKERFILES)
def test_final_stage_runs_as_the_unprivileged_user_and_installs_only_its_wheels(
        name: str) -> None:
    stages = _stages(parse_dockerfile(name))
    assert len(stages) >= 2, f"{name} should build the package in one stage, run in another"
    final = stages[-1]
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    # One RUN installs the dependencies (from mounted wheels, never copied into a layer).
    run = _final_install_run(name)
    assert "--mount=type=bind,source=wheels,target=/wheels" in run
    assert "apt-get" not in run and "apk " not in run, "no system packages in the image"
    copies = [i["value"] for i in final if i["instruction"] == "COPY"]
    assert not any("wheels" in c for c in copies), "wheels must not become a layer"
    # Only the pinned list of the extra (from a stage of its own) keys the dependency layer.
    assert [c for c in copies if "--from=" not in c] == []
    assert any(c.startswith("--from=requirements /tmp/") for c in copies)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_ships_without_a_package_installer(name: str) -> None:
    run = _final_install_run(name)
    # removed in the very layer that used it, from the venv and from the system python
    assert "pip uninstall --yes --quiet pip setuptools" in run
    assert run.rindex("pip uninstall") > run.rindex("pip install")
    assert "python3 -m pip uninstall --yes --quiet pip setuptools wheel" in run


@pytest.mark.parametrize(("name", "extra"), DOCKERFILES.items())
def test_build_installs_only_the_image_extra(name: str, extra: str) -> None:
    structure = parse_dockerfile(name).structure
    runs = " ".join(i["value"] for i in structure if i["instruction"] == "RUN")
    assert re.search(rf'pip install [^&]*--no-deps --target /opt/app "\.\[{extra}\]"', runs)
    assert f'["optional-dependencies"]["{extra}"]' in runs and f"-r /tmp/{extra}.txt" in runs
    assert not re.search(r"\[(dev|test)", runs) and "pytest" not in runs


@pytest.mark.parametrize(("name", "extra"), DOCKERFILES.items())
def test_entry_point_is_a_console_script_of_the_package(name: str, extra: str) -> None:
    [entry] = [json.loads(i["value"]) for i in parse_dockerfile(name).structure
               if i["instruction"] == "ENTRYPOINT"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry == [f"bem-{extra}"] and entry[0] in scripts


def test_runtime_torch_build_is_chosen_by_a_build_argument() -> None:
    final = _stages(parse_dockerfile("Dockerfile.runtime"))[-1]
    args = dict(i["value"].split("=", 1) for i in final if i["instruction"] == "ARG")
    assert args["TORCH_VARIANT"] == "cuda"
    assert args["TORCH_INDEX_URL"] == ""  # no index host is baked into the project
    run = _final_install_run("Dockerfile.runtime")
    assert '--index-url "${TORCH_INDEX_URL}"' in run
    # A variant other than the default index's build must name its index, loudly.
    assert 'needs --build-arg TORCH_INDEX_URL' in run and "exit 2" in run
    # torch comes first so that the other dependencies keep the chosen build.
    assert run.index("TORCH_PIN") < run.index("-r /tmp/runtime.txt")
    assert "grep '^torch==' /tmp/runtime.txt" in run  # the pin pyproject.toml gives


def _healthcheck_command() -> list[str]:
    [check] = [i["value"] for i in parse_dockerfile("Dockerfile.runtime").structure
               if i["instruction"] == "HEALTHCHECK"]
    return json.loads(check.split("CMD", 1)[1])


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


def test_runtime_healthcheck_passes_on_a_healthy_server_and_fails_without_one() -> None:
    command = _healthcheck_command()
    assert command[:2] == ["python3", "-c"] and "/health" in command[2]
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    run = [sys.executable, *command[1:]]
    env = {**os.environ, "BEM_PORT": str(port)}
    try:
        assert subprocess.run(run, env=env, timeout=30).returncode == 0
    finally:
        server.shutdown()
        server.server_close()
    failed = subprocess.run(run, env=env, timeout=30, capture_output=True)
    assert failed.returncode != 0, "the check passed with nothing listening"


def test_runtime_image_serves_by_default() -> None:
    structure = parse_dockerfile("Dockerfile.runtime").structure
    [cmd] = [json.loads(i["value"]) for i in structure if i["instruction"] == "CMD"]
    assert cmd == ["serve"]


def test_pinned_python_matches_the_project_requirement() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(x) for x in requires.lstrip(">=").split("."))
    for name in DOCKERFILES:
        for image in parse_dockerfile(name).parent_images:
            version = tuple(int(x) for x in image.split(":")[1].split("-")[0].split(".")[:2])
            assert version >= minimum, f"{name}: {image} is older than requires-python {requires}"
