"""The Dockerfile, read statically (no Docker engine runs here): pinned, non-root, minimal."""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .manifests import REPO, Build, pod_template, project_scripts

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

#: An official Python image pinned to an exact patch release and Debian release, with an
#: optional digest.
PINNED_PYTHON = re.compile(
    r"^python:(?P<version>3\.\d+\.\d+)-slim-(?:bookworm|trixie)(?:@sha256:[0-9a-f]{64})?$"
)
BUILD_TOOLS = re.compile(
    r"apt-get install|apt install|apk add|pip install|\buv\b|gcc|build-essential|make\b"
)


@dataclass
class Stage:
    image: str
    alias: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(text: str) -> list[Stage]:
    """Stages with their instructions; continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            alias = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], alias))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(part, str) for part in value)
    return value


def dockerignore_excludes(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or a parent decides."""
    excluded = False
    parts = relative.split("/")
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern[1:] if negated else pattern
        glob = glob.rstrip("/")
        if glob.startswith("**/"):
            matched = any(fnmatch.fnmatch(part, glob[3:]) for part in parts)
        else:
            matched = any(fnmatch.fnmatch(candidate, glob) for candidate in candidates)
        if matched:
            excluded = not negated
    return excluded


@pytest.fixture(name="stages", scope="module")
def fixture_stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())


@pytest.fixture(name="ignore_patterns", scope="module")
def fixture_ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


class TestDockerfile:
    def test_multi_stage(self, stages: list[Stage]) -> None:
        """A builder stage and a separate runtime stage."""
        assert len(stages) >= 2
        assert stages[0].alias is not None
        assert stages[-1].alias != stages[0].alias

    def test_base_images_are_pinned(self, stages: list[Stage]) -> None:
        """Every external base is python:3.11.x-slim-<debian> (optionally by digest)."""
        aliases = {stage.alias for stage in stages if stage.alias}
        for stage in stages:
            if stage.image in aliases:
                continue
            match = PINNED_PYTHON.match(stage.image)
            assert match is not None, f"base image {stage.image!r} is not pinned"
            assert match.group("version").startswith("3.11.")

    def test_stages_share_the_base(self, stages: list[Stage]) -> None:
        """The runtime copies a virtualenv whose interpreter link must exist there too."""
        assert len({stage.image for stage in stages}) == 1

    def test_runs_as_numeric_non_root_user(self, stages: list[Stage]) -> None:
        """The final stage ends as a numeric, non-zero UID (Kubernetes can verify it)."""
        users = stages[-1].arguments("USER")
        assert users, "the final stage sets no USER"
        uid, _, gid = users[-1].partition(":")
        assert uid.isdigit() and int(uid) != 0
        assert not gid or (gid.isdigit() and int(gid) != 0)
        last_user = max(i for i, (kw, _) in enumerate(stages[-1].instructions) if kw == "USER")
        later = [kw for kw, _ in stages[-1].instructions[last_user + 1 :]]
        assert "RUN" not in later

    def test_uid_matches_the_pod_security_context(self, stages: list[Stage], build: Build) -> None:
        """The image's user is the one the pods run as."""
        uid = int(stages[-1].arguments("USER")[-1].partition(":")[0])
        for workload in build.workloads():
            assert pod_template(workload)[1]["securityContext"]["runAsUser"] == uid

    def test_uv_is_pinned_and_the_lock_is_honoured(self, stages: list[Stage]) -> None:
        """uv comes from PyPI at an exact version; dependencies install --frozen without dev."""
        builder = " ".join(stages[0].arguments("RUN"))
        assert re.search(r"pip install [\"']?uv==\d+\.\d+\.\d+[\"']?", builder)
        assert re.search(r"uv sync --frozen --no-dev(?!\S)", builder)

    def test_uv_matches_the_development_machines(self, stages: list[Stage]) -> None:
        """The image resolves the lock with the uv version bootstrap installs for everyone."""
        bootstrap = (REPO / "scripts" / "bootstrap.sh").read_text()
        wanted = re.search(r"^UV_VERSION=(\S+)$", bootstrap, re.MULTILINE)
        assert wanted is not None, "scripts/bootstrap.sh no longer pins UV_VERSION"
        assert f"uv=={wanted.group(1)}" in " ".join(stages[0].arguments("RUN"))

    def test_final_stage_has_no_build_tools(self, stages: list[Stage]) -> None:
        """The runtime stage installs nothing; it only copies the built /app."""
        for run in stages[-1].arguments("RUN"):
            assert not BUILD_TOOLS.search(run), run
        copies = stages[-1].arguments("COPY")
        assert copies and all(copy.startswith(f"--from={stages[0].alias} ") for copy in copies)

    def test_layout_keeps_schemas_beside_services(self, stages: list[Stage]) -> None:
        """/app/services and /app/schemas, as the services resolve <repo root>/schemas."""
        builder = stages[0]
        assert builder.arguments("WORKDIR")[-1] == "/app"
        copies = [args.split() for args in builder.arguments("COPY")]
        destinations = {parts[0]: parts[-1] for parts in copies if len(parts) == 2}
        assert destinations.get("services") in ("./services", "/app/services", "services/")
        assert destinations.get("schemas") in ("./schemas", "/app/schemas", "schemas/")
        assert stages[-1].arguments("WORKDIR")[-1] == "/app"

    def test_entry_point_is_a_project_script(self, stages: list[Stage]) -> None:
        """What the image runs by default is a console script pyproject declares."""
        final = stages[-1]
        command = exec_form((final.arguments("ENTRYPOINT") or final.arguments("CMD"))[-1])
        assert command[0] in project_scripts()

    def test_declared_scripts_are_the_three_services(self) -> None:
        """pyproject still declares the entry points the manifests and image run."""
        assert {"suno-ingest", "suno-processor", "suno-archiver"} <= set(project_scripts())

    def test_exposes_the_container_ports(self, stages: list[Stage], build: Build) -> None:
        """Every port a pod declares is one the image documents."""
        exposed = {int(port) for args in stages[-1].arguments("EXPOSE") for port in args.split()}
        for workload in build.workloads():
            for port in pod_template(workload)[1]["containers"][0]["ports"]:
                assert port["containerPort"] in exposed

    def test_copied_sources_exist_and_are_not_ignored(
        self, stages: list[Stage], ignore_patterns: list[str]
    ) -> None:
        """Each COPY source from the context exists and survives .dockerignore."""
        for stage in stages:
            for args in stage.arguments("COPY"):
                parts = args.split()
                if parts[0].startswith("--from="):
                    continue
                for source in parts[:-1]:
                    assert (REPO / source).exists(), source
                    assert not dockerignore_excludes(source, ignore_patterns), source

    def test_dockerignore_keeps_the_context_small(self, ignore_patterns: list[str]) -> None:
        """Virtualenvs, git history, tests and caches never enter the build context."""
        for path in (
            ".venv/bin/python",
            ".git/HEAD",
            "tests/conftest.py",
            "deploy/k8s",
            "services/common/__pycache__/x.pyc",
        ):
            assert dockerignore_excludes(path, ignore_patterns), path
        for path in ("services/common/settings.py", "schemas", "uv.lock"):
            assert not dockerignore_excludes(path, ignore_patterns), path

    def test_parser_sees_an_unpinned_base(self, tmp_path: Path) -> None:
        """The pin check rejects a floating tag (the parser is not vacuous)."""
        stages = parse("FROM python:3.11-slim AS builder\nRUN true\nFROM builder\nUSER 1\n")
        assert PINNED_PYTHON.match(stages[0].image) is None
        assert stages[1].image == "builder"
