"""Every container of every workload in every overlay passes the security review's rules."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from .manifests import Build, pod_security_violations, pod_template, project_scripts


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod_template(workload)[1]["containers"][0]
    return container


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    return pod_template(workload)[1]


BREAKAGES: dict[str, Callable[[dict[str, Any]], object]] = {
    "root filesystem writable": lambda w: _container(w)["securityContext"].update(
        readOnlyRootFilesystem=False
    ),
    "privilege escalation": lambda w: _container(w)["securityContext"].pop(
        "allowPrivilegeEscalation"
    ),
    "capabilities kept": lambda w: _container(w)["securityContext"].pop("capabilities"),
    "capability added": lambda w: _container(w)["securityContext"]["capabilities"].update(
        add=["NET_ADMIN"]
    ),
    "root user": lambda w: _container(w)["securityContext"].update(runAsUser=0),
    "non-root not required": lambda w: (
        _container(w)["securityContext"].pop("runAsNonRoot"),
        _pod(w)["securityContext"].pop("runAsNonRoot"),
    ),
    "seccomp unconfined": lambda w: _container(w)["securityContext"].update(
        seccompProfile={"type": "Unconfined"}
    ),
    "no memory limit": lambda w: _container(w)["resources"]["limits"].pop("memory"),
    "no cpu request": lambda w: _container(w)["resources"]["requests"].pop("cpu"),
    "request above limit": lambda w: _container(w)["resources"]["requests"].update(memory="64Gi"),
    "readiness on healthz": lambda w: _container(w)["readinessProbe"]["httpGet"].update(
        path="/healthz"
    ),
    "liveness tied to kafka": lambda w: _container(w)["livenessProbe"]["httpGet"].update(
        path="/readyz"
    ),
    "no liveness": lambda w: _container(w).pop("livenessProbe"),
    "probe on unknown port": lambda w: _container(w)["readinessProbe"]["httpGet"].update(port=9999),
    "short grace period": lambda w: _pod(w).update(terminationGracePeriodSeconds=10),
    "no /tmp volume": lambda w: _container(w).pop("volumeMounts"),
    "no topology spread": lambda w: _pod(w).pop("topologySpreadConstraints"),
    "token mounted": lambda w: _pod(w).update(automountServiceAccountToken=True),
    "default service account": lambda w: _pod(w).pop("serviceAccountName"),
    "host network": lambda w: _pod(w).update(hostNetwork=True),
    "latest image": lambda w: _container(w).update(image="suno-midi-pipeline:latest"),
    "service links": lambda w: _pod(w).pop("enableServiceLinks"),
    "privileged init container": lambda w: (
        _pod(w)
        .setdefault("initContainers", [])
        .append(
            {
                **copy.deepcopy(_container(w)),
                "name": "init",
                "securityContext": {"privileged": True},
            }
        )
    ),
}


class TestPodSecurity:
    def test_every_workload_passes(self, build: Build) -> None:
        """Non-root, read-only root, no capabilities, seccomp, resources, probes, drain, spread."""
        problems = [p for w in build.workloads() for p in pod_security_violations(build, w)]
        assert problems == []

    @pytest.mark.parametrize("breakage", sorted(BREAKAGES))
    def test_check_catches(self, build_overlay: Callable[[str], Build], breakage: str) -> None:
        """Breaking one rule in a copy of a compliant workload is reported."""
        build = build_overlay("prod")
        for workload in build.workloads():
            broken = copy.deepcopy(workload)
            BREAKAGES[breakage](broken)
            assert pod_security_violations(build, broken) != [], workload["metadata"]["name"]

    def test_ingest_grace_covers_its_configured_drain(self, build: Build) -> None:
        """The ingest's grace period exceeds INGEST_SHUTDOWN_GRACE_SECONDS plus preStop."""
        ingest = build.get("Deployment", "suno-midi-ingest")
        assert ingest is not None
        pod = _pod(ingest)
        env = build.container_env(pod["containers"][0])
        drain = float(env["INGEST_SHUTDOWN_GRACE_SECONDS"] or 0)
        assert pod["terminationGracePeriodSeconds"] > drain + 5

    def test_commands_are_project_entry_points(self, build: Build) -> None:
        """Each container runs a console script pyproject declares; archiver, tracker `run`."""
        scripts = project_scripts()
        commands = {
            w["metadata"]["name"]: _container(w)["command"] + _container(w).get("args", [])
            for w in build.workloads()
        }
        assert all(command[0] in scripts for command in commands.values()), commands
        assert commands["suno-midi-ingest"] == ["suno-ingest"]
        assert commands["suno-midi-processor"] == ["suno-processor"]
        assert commands["suno-midi-archiver"] == ["suno-archiver", "run"]
        assert commands["suno-midi-tracker"] == ["suno-tracker", "run"]

    def test_ports_match_settings(self, build: Build) -> None:
        """Each container listens where its ConfigMap tells the service to listen."""
        port_vars = {
            "suno-midi-ingest": "INGEST_PORT",
            "suno-midi-processor": "PROCESSOR_PORT",
            "suno-midi-archiver": "ARCHIVER_PORT",
            "suno-midi-tracker": "TRACKER_PORT",
            "suno-midi-console": "CONSOLE_PORT",
        }
        for workload in build.workloads():
            container = _container(workload)
            env = build.container_env(container)
            declared = {port["name"]: port["containerPort"] for port in container["ports"]}
            assert declared == {"http": int(env[port_vars[workload["metadata"]["name"]]] or 0)}
