"""Reading built kustomize output, and the checks the deploy tests apply to it.

The checks return lists of human-readable violations rather than asserting, so each test
can report every problem at once and so the checks themselves can be tested against
deliberately broken manifests.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "deploy" / "k8s"
OVERLAYS_DIR = K8S_DIR / "overlays"
COMPONENTS_DIR = K8S_DIR / "components"
ENSURE_KUSTOMIZE = REPO / "scripts" / "ensure-kustomize.sh"

#: Every overlay directory; a new one is picked up by every test without edits.
OVERLAYS = sorted(
    path.name for path in OVERLAYS_DIR.iterdir() if (path / "kustomization.yaml").is_file()
)

#: The Kubernetes version the built objects are validated against (kubernetes-validate
#: ships its schemas). The overlays' Pod Security admission labels name the same version.
KUBERNETES_VERSION = "1.33"

#: API groups of the custom resources we use; every other object must be a built-in kind.
CRD_KINDS = {
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"),
    ("kafka.strimzi.io/v1beta2", "KafkaUser"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("postgresql.cnpg.io/v1", "Cluster"),
}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}

#: The services finish their in-flight work within this many seconds of SIGTERM.
DRAIN_SECONDS = 15

#: Variables a container may get besides the services' settings: the S3 client's
#: credentials.
EXTRA_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def project_scripts() -> dict[str, str]:
    """pyproject's [project.scripts]: console entry point name -> target."""
    with (REPO / "pyproject.toml").open("rb") as handle:
        return dict(tomllib.load(handle)["project"]["scripts"])


def kustomize_build(kustomize: Path, directory: Path) -> list[dict[str, Any]]:
    """``kustomize build directory`` parsed; fails with kustomize's own message."""
    result = subprocess.run(
        [str(kustomize), "build", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        command = shlex.join([str(kustomize), "build", str(directory)])
        raise AssertionError(f"{command} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@dataclass
class Build:
    """The objects one overlay builds, with the look-ups the tests share."""

    overlay: str
    objects: list[dict[str, Any]]
    _index: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for obj in self.objects:
            self._index[(obj["kind"], obj["metadata"]["name"])] = obj

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] in kinds]

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self._index.get((kind, name))

    def workloads(self) -> list[dict[str, Any]]:
        return self.of_kind(*WORKLOAD_KINDS)

    def container_env(self, container: Mapping[str, Any]) -> dict[str, str | None]:
        """A container's environment: ConfigMap values, literals; None for Secret refs."""
        env: dict[str, str | None] = {}
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref is None:
                continue
            config_map = self.get("ConfigMap", ref["name"])
            assert config_map is not None, f"envFrom names a missing ConfigMap {ref['name']}"
            prefix = source.get("prefix", "")
            env.update({prefix + k: v for k, v in config_map.get("data", {}).items()})
        for var in container.get("env", []):
            env[var["name"]] = var.get("value")
        return env

    def secret_ref(self, container: Mapping[str, Any], name: str) -> tuple[str, str] | None:
        """(Secret name, key) that variable ``name`` of ``container`` is read from."""
        for var in container.get("env", []):
            if var["name"] == name:
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                return None if ref is None else (ref["name"], ref["key"])
        return None


def pod_template(workload: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, spec) of the pods a workload runs."""
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template = spec["template"]
    return template.get("metadata", {}), template["spec"]


def containers(pod_spec: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """("container" | "initContainer", container) for every container of a pod."""
    for kind, key in (("initContainer", "initContainers"), ("container", "containers")):
        for container in pod_spec.get(key, []):
            yield kind, container


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics; an empty selector matches everything."""
    if selector is None:
        return False
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        present = key in labels
        if operator == "In" and (not present or labels[key] not in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
}


def quantity(value: str | int | float) -> Decimal:
    match = _QUANTITY.match(str(value))
    if match is None or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a resource quantity: {value!r}")
    return Decimal(match.group(1)) * _SUFFIX[match.group(2)]


def _prestop_sleep_seconds(container: Mapping[str, Any]) -> int:
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        return int(pre_stop["sleep"]["seconds"])
    command = pre_stop.get("exec", {}).get("command", [])
    if len(command) == 2 and command[0] in ("sleep", "/bin/sleep"):
        return int(command[1])
    return 0


def _http_probe_violations(
    where: str, container: Mapping[str, Any], probe_name: str, path: str
) -> list[str]:
    probe = container.get(probe_name)
    if probe is None:
        return [f"{where}: no {probe_name}"]
    http = probe.get("httpGet")
    if http is None or http.get("path") != path:
        return [f"{where}: {probe_name} must be an HTTP GET of {path}"]
    ports = {p.get("name") for p in container.get("ports", [])} | {
        p["containerPort"] for p in container.get("ports", [])
    }
    if http.get("port") not in ports:
        return [f"{where}: {probe_name} port {http.get('port')!r} is not a container port"]
    return []


def pod_security_violations(build: Build, workload: Mapping[str, Any]) -> list[str]:
    """Everything in a workload's pod spec that a security review would reject."""
    name = f"{workload['kind']}/{workload['metadata']['name']}"
    metadata, pod = pod_template(workload)
    labels = metadata.get("labels", {})
    problems: list[str] = []
    pod_sc = pod.get("securityContext", {})

    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{name}: {flag} is set")
    if pod.get("enableServiceLinks", True):
        problems.append(f"{name}: enableServiceLinks must be false (it injects *_PORT variables)")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: automountServiceAccountToken must be false on the pod")
    account = pod.get("serviceAccountName")
    if account in (None, "", "default"):
        problems.append(f"{name}: runs as the default ServiceAccount")
    else:
        service_account = build.get("ServiceAccount", account)
        if service_account is None:
            problems.append(f"{name}: ServiceAccount {account} is not part of the build")
        elif service_account.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: ServiceAccount {account} automounts its token")

    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for volume in volumes.values():
        if "hostPath" in volume:
            problems.append(f"{name}: hostPath volume {volume['name']}")

    if pod.get("securityContext", {}).get("runAsUser") == 0:
        problems.append(f"{name}: pod runs as UID 0")

    spread = pod.get("topologySpreadConstraints", [])
    keys = [constraint["topologyKey"] for constraint in spread]
    for wanted in ("kubernetes.io/hostname", "topology.kubernetes.io/zone"):
        if keys.count(wanted) != 1:
            problems.append(f"{name}: needs exactly one topology spread over {wanted}")
    for constraint in spread:
        if not selector_matches(constraint.get("labelSelector"), labels):
            problems.append(
                f"{name}: topology spread over {constraint['topologyKey']} does not select "
                "the workload's own pods"
            )

    grace = pod.get("terminationGracePeriodSeconds", 30)
    for kind, container in containers(pod):
        where = f"{name} {kind} {container['name']}"
        sc = container.get("securityContext", {})

        def effective(key: str, sc: Mapping[str, Any] = sc) -> Any:
            return sc.get(key, pod_sc.get(key))

        if effective("runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        uid = effective("runAsUser")
        if not isinstance(uid, int) or uid == 0:
            problems.append(f"{where}: needs a numeric non-zero runAsUser")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        capabilities = sc.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{where}: capabilities do not drop ALL")
        if capabilities.get("add"):
            problems.append(f"{where}: adds capabilities {capabilities['add']}")
        if (effective("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile is not RuntimeDefault")

        resources = container.get("resources", {})
        for section in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(section, {}):
                    problems.append(f"{where}: no {resource} {section[:-1]}")
        for resource, request in resources.get("requests", {}).items():
            limit = resources.get("limits", {}).get(resource)
            if limit is not None and quantity(request) > quantity(limit):
                problems.append(f"{where}: {resource} request {request} above limit {limit}")

        mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
        tmp = volumes.get(mounts.get("/tmp", ""), {})
        if "emptyDir" not in tmp:
            problems.append(f"{where}: /tmp is not an emptyDir (the root file system is read-only)")

        image = str(container.get("image", ""))
        if "@sha256:" not in image and (":" not in image.rsplit("/", 1)[-1]):
            problems.append(f"{where}: image {image!r} has no tag or digest")
        elif image.endswith(":latest"):
            problems.append(f"{where}: image {image!r} uses the latest tag")

        if kind != "container":
            continue
        problems += _http_probe_violations(where, container, "readinessProbe", "/readyz")
        problems += _http_probe_violations(where, container, "livenessProbe", "/healthz")

        env = build.container_env(container)
        drain = max(DRAIN_SECONDS, float(env.get("INGEST_SHUTDOWN_GRACE_SECONDS") or 0))
        needed = drain + _prestop_sleep_seconds(container)
        if grace <= needed:
            problems.append(
                f"{where}: terminationGracePeriodSeconds {grace} does not exceed the drain "
                f"time plus preStop ({needed:g} s)"
            )
    return problems


@dataclass(frozen=True)
class Peer:
    """One ``from``/``to`` entry of a NetworkPolicy rule, reduced to what the tests compare."""

    namespace: str | None  # kubernetes.io/metadata.name, "*" for any namespace, None: own
    pods: tuple[tuple[str, str], ...]  # matchLabels of the podSelector; () for all pods
    cidr: str | None = None


def _peer(entry: Mapping[str, Any]) -> Peer:
    if "ipBlock" in entry:
        return Peer(namespace=None, pods=(), cidr=entry["ipBlock"]["cidr"])
    namespace_selector = entry.get("namespaceSelector")
    if namespace_selector is None:
        namespace = None
    elif not namespace_selector:
        namespace = "*"
    else:
        namespace = namespace_selector.get("matchLabels", {}).get(
            "kubernetes.io/metadata.name", repr(namespace_selector)
        )
    pods = tuple(sorted(entry.get("podSelector", {}).get("matchLabels", {}).items()))
    return Peer(namespace=namespace, pods=pods)


@dataclass(frozen=True)
class Rule:
    """One ingress or egress rule: its peers (empty: anywhere) and (protocol, port) pairs."""

    peers: frozenset[Peer]
    ports: frozenset[tuple[str, int | str]]


def network_rules(
    build: Build, pod_labels: Mapping[str, str], direction: str
) -> tuple[bool, list[Rule]]:
    """(isolated, rules) for ``direction`` ("ingress" | "egress") of pods with these labels."""
    policy_type = direction.capitalize()
    isolated = False
    rules: list[Rule] = []
    for policy in build.of_kind("NetworkPolicy"):
        spec = policy["spec"]
        if not selector_matches(spec.get("podSelector", {}), pod_labels):
            continue
        types = spec.get("policyTypes") or (
            ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]
        )
        if policy_type not in types:
            continue
        isolated = True
        peers_key = "from" if direction == "ingress" else "to"
        for rule in spec.get(direction, []):
            rules.append(
                Rule(
                    peers=frozenset(_peer(entry) for entry in rule.get(peers_key, [])),
                    ports=frozenset(
                        (port.get("protocol", "TCP"), port.get("port", "*"))
                        for port in rule.get("ports", [])
                    ),
                )
            )
    return isolated, rules


def flatten(items: Iterable[Iterable[Any]]) -> list[Any]:
    return [item for group in items for item in group]
