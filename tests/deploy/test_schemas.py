"""Built-in objects validate offline against the pinned Kubernetes version's schemas."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions

from .manifests import CRD_KINDS, KUBERNETES_VERSION, Build


def validate(obj: dict[str, object]) -> None:
    """Strict validation: unknown fields (typos) are errors, not silently dropped."""
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


class TestSchemas:
    def test_pinned_version_is_shipped(self) -> None:
        """The installed kubernetes-validate has schemas for the pinned version."""
        assert any(version.startswith(f"{KUBERNETES_VERSION}.") for version in all_versions())

    def test_pod_security_labels_name_the_pinned_version(self, build: Build) -> None:
        """Admission enforces the standard of the version the objects are validated against."""
        labels = build.of_kind("Namespace")[0]["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce-version"] == f"v{KUBERNETES_VERSION}"

    def test_built_in_objects_validate(self, build: Build) -> None:
        """Every object of a built-in kind matches its schema; every other kind is a known CRD."""
        problems = []
        for obj in build.objects:
            key = (obj["apiVersion"], obj["kind"])
            where = f"{obj['kind']}/{obj['metadata']['name']}"
            if key in CRD_KINDS:
                continue
            try:
                validate(obj)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(part) for part in exc.path)
                problems.append(f"{where}: {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{where}: {key} is neither built in nor a known custom resource")
        assert problems == []

    def test_validation_catches_a_misspelled_field(self, build: Build) -> None:
        """Strict mode rejects a field the API does not have (the check is not vacuous)."""
        deployment = copy.deepcopy(build.of_kind("Deployment")[0])
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        container["securityContext"]["readOnlyRootFileSystem"] = True
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(deployment)

    def test_validation_catches_a_wrong_type(self, build: Build) -> None:
        """A string where the schema wants an integer is rejected."""
        hpa = copy.deepcopy(build.of_kind("HorizontalPodAutoscaler")[0])
        hpa["spec"]["minReplicas"] = "two"
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(hpa)
