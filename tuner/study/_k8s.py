"""``tuner k8s``: Kubernetes manifests for a study, as ``tuner slurm`` writes an sbatch script.

One multi-document YAML file: a Job that creates the study, a Job of N workers, and the
read-only dashboard (a Deployment behind a ClusterIP Service, reached with
``kubectl port-forward``). The database password comes from a Secret, through ``PGPASSWORD``;
the manifests hold only its name.

The worker Job's pods use ``restartPolicy: Never``, which Kubernetes requires of a Job with a
``podFailurePolicy``: a failure a restart cannot fix (exit status
:data:`~tuner.errors.PERMANENT_EXIT_CODE`) fails the whole Job at once; a pod evicted or
pre-empted (a ``DisruptionTarget`` condition) is replaced without counting; any other failure
starts a new pod, up to ``backoffLimit``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuner.errors import PERMANENT_EXIT_CODE, ConfigError, DeploymentError
from tuner.storage import resolve_url
from tuner.study._choices import PRUNERS, SAMPLERS

__all__ = ["K8sOptions", "k8s_manifests", "object_prefix"]

logger = logging.getLogger(__name__)

FEATURES_MOUNT = "/data/features"
CHECKPOINTS_MOUNT = "/data/checkpoints"
STUDY_FILES_MOUNT = "/etc/tuner"
DASHBOARD_PORT = 8080
GRACE_SECONDS = 120
"""terminationGracePeriodSeconds: SIGTERM fails the running trial as "interrupted" and queues it
again within seconds; the rest is margin for a slow database (SLURM gets the same two minutes)."""
STUDY_WAIT_SECONDS = 1800
"""How long a worker pod waits for the create Job's study before it gives up for good."""
IMAGE_USER = 1000
"""The user id of the Dockerfile's ``tuner`` user."""

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SLUG_LENGTH = 22  # "tuner-" + slug + "-" + hash + "-dashboard": at most 47 characters


@dataclass(frozen=True)
class K8sOptions:
    """What the manifests ask of the cluster. Claims and the Secret must exist already."""

    workers: int
    gpus_per_worker: int = 1
    cpus_per_worker: int = 8
    image: str = "tuner:latest"
    features_claim: str = "tuner-features"
    checkpoints_claim: str | None = None
    secret: str = "tuner-db"
    max_restarts: int = 3
    trials: int = 50
    pruner: str = "median"
    sampler: str = "tpe"
    space: Path | None = None
    config: Path | None = None


def object_prefix(study: str) -> str:
    """``tuner-<slug>``: a DNS-1123 label derived from the study name, short enough for suffixes.

    A name that had to be changed (upper case, other characters, length) gets a hash of the
    original, so that two studies never share objects.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", study.lower()).strip("-")[:_SLUG_LENGTH].strip("-")
    if slug != study:
        digest = hashlib.sha256(study.encode()).hexdigest()[:8]
        slug = f"{slug}-{digest}" if slug else digest
    return f"tuner-{slug}"


def k8s_manifests(study: str, options: K8sOptions, *, storage: str | None) -> str:
    """The manifests as one YAML stream, ready for ``kubectl apply -f``."""
    _check(options)
    resolved = resolve_url(storage)
    if resolved.kind != "postgresql":
        raise DeploymentError(
            "a cluster needs a shared PostgreSQL study database; pass storage "
            "postgresql://USER@HOST:5432/DB (or set TUNER_STORAGE)",
            params=("storage",),
        )
    if resolved.url.password is not None:
        logger.warning(
            "the password in the storage URL is left out of the manifests; the pods read it "
            "from Secret %s (key 'password')", options.secret,
        )  # fmt: skip
    files = _study_files(options)
    prefix = object_prefix(study)
    env: list[dict[str, Any]] = [
        {"name": "TUNER_STORAGE", "value": resolved.public},
        {
            "name": "PGPASSWORD",
            "valueFrom": {"secretKeyRef": {"name": options.secret, "key": "password"}},
        },
    ]
    parts = _Parts(study, prefix, options, env)
    documents = [
        *([parts.config_map(files)] if files else []),
        parts.create_job(files),
        parts.worker_job(),
        parts.dashboard(),
        parts.service(),
    ]
    header = _header(prefix, options)
    return header + yaml.safe_dump_all(documents, sort_keys=False, explicit_start=True)


def _check(options: K8sOptions) -> None:
    for name, value in (
        ("workers", options.workers),
        ("gpus_per_worker", options.gpus_per_worker),
        ("cpus_per_worker", options.cpus_per_worker),
        ("trials", options.trials),
    ):
        if value < 1:
            raise DeploymentError(f"{name} must be at least 1, but got {value}")
    if options.max_restarts < 0:
        raise DeploymentError(f"max_restarts must be 0 or more, but got {options.max_restarts}")
    names = {"features_claim": options.features_claim, "secret": options.secret}
    if options.checkpoints_claim is not None:
        names["checkpoints_claim"] = options.checkpoints_claim
    for what, name in names.items():
        if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
            raise DeploymentError(
                f"{what} {name!r} is not a Kubernetes object name; use lower-case letters, "
                "digits, '-' and '.', starting and ending with a letter or digit"
            )
    if not options.image or any(c.isspace() for c in options.image):
        raise DeploymentError(
            f"image {options.image!r} is not an image reference like repo/tuner:tag"
        )
    if options.pruner not in PRUNERS:
        raise DeploymentError(
            f"pruner must be one of {', '.join(PRUNERS)}, but got {options.pruner!r}"
        )
    if options.sampler not in SAMPLERS:
        raise DeploymentError(
            f"sampler must be one of {', '.join(SAMPLERS)}, but got {options.sampler!r}"
        )


def _study_files(options: K8sOptions) -> dict[str, str]:
    """The search space and base config, carried into the create Job by a ConfigMap."""
    files = {}
    for key, path in (("space.yaml", options.space), ("config.yaml", options.config)):
        if path is None:
            continue
        try:
            text = path.read_text()
            parsed = yaml.safe_load(text)
        except OSError as exc:
            raise ConfigError(f"cannot read {str(path)!r}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            problem = " ".join(str(exc).split())
            raise ConfigError(f"{str(path)!r} is not valid YAML: {problem}") from None
        if not isinstance(parsed, dict):
            raise ConfigError(f"{str(path)!r} must hold a YAML mapping, but holds {parsed!r:.40}")
        files[key] = text
    return files


def _header(prefix: str, options: K8sOptions) -> str:
    checkpoints = (
        f"claim {options.checkpoints_claim} (ReadWriteMany) at {CHECKPOINTS_MOUNT}"
        if options.checkpoints_claim
        else "none: a retried trial starts from epoch 1"
    )
    return f"""\
# Kubernetes manifests of a tuner study: {prefix}-create creates it, {prefix}-workers
# runs {options.workers} worker pod(s), {prefix}-dashboard serves the dashboard read-only
# inside the cluster (a ClusterIP Service: nothing is exposed outside it).
#
#   kubectl create secret generic {options.secret} --from-file=password=./db-password
#   kubectl apply -f THIS_FILE
#   kubectl port-forward service/{prefix}-dashboard {DASHBOARD_PORT}:{DASHBOARD_PORT}
#   (then open http://127.0.0.1:{DASHBOARD_PORT}/dashboard/)
#
# The feature store: claim {options.features_claim} (ReadOnlyMany), mounted read-only at
# {FEATURES_MOUNT}. Checkpoints: {checkpoints}.
# The database password is the key 'password' of Secret {options.secret}; it is never written
# here.
# A worker stopped by Kubernetes (SIGTERM) fails its running trial as "interrupted" and
# queues it for another worker. Exit status {PERMANENT_EXIT_CODE} (no such study, a bad feature
# store) fails the Job at once; other failures are retried.
"""


class _Parts:
    """The manifests' pieces for one study."""

    def __init__(
        self, study: str, prefix: str, options: K8sOptions, env: list[dict[str, Any]]
    ) -> None:
        self.study = study
        self.prefix = prefix
        self.options = options
        self.env = env

    def metadata(self, component: str) -> dict[str, Any]:
        return {
            "name": f"{self.prefix}-{component}",
            "labels": self.labels(component),
            "annotations": {"tuner/study": self.study},
        }

    def labels(self, component: str) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "tuner",
            "app.kubernetes.io/instance": self.prefix,
            "app.kubernetes.io/component": component,
        }

    def container(self, name: str, args: list[str], **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "image": self.options.image,
            "imagePullPolicy": "IfNotPresent",
            "args": args,
            "env": copy.deepcopy(self.env),  # a shared list would be written as a YAML alias
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
            **extra,
        }

    def pod(self, component: str, spec: dict[str, Any]) -> dict[str, Any]:
        security = {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_USER,
            "runAsGroup": IMAGE_USER,
            "fsGroup": IMAGE_USER,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        return {
            "metadata": {"labels": self.labels(component)},
            "spec": {**spec, "securityContext": security},
        }

    def volumes(self, *, study_files: bool = False) -> tuple[list[Any], list[Any]]:
        """The pod's volumes and the container's mounts: the store read-only, checkpoints."""
        store = {"name": "features", "persistentVolumeClaim": {
            "claimName": self.options.features_claim, "readOnly": True}}  # fmt: skip
        volumes: list[Any] = [store]
        mounts: list[Any] = [{"name": "features", "mountPath": FEATURES_MOUNT, "readOnly": True}]
        if self.options.checkpoints_claim is not None:
            volumes.append(
                {"name": "checkpoints",
                 "persistentVolumeClaim": {"claimName": self.options.checkpoints_claim}}
            )  # fmt: skip
            mounts.append({"name": "checkpoints", "mountPath": CHECKPOINTS_MOUNT})
        if study_files:
            volumes.append({"name": "study-files", "configMap": {"name": f"{self.prefix}-study"}})
            mounts.append(
                {"name": "study-files", "mountPath": STUDY_FILES_MOUNT, "readOnly": True}
            )
        return volumes, mounts

    def failure_policy(self) -> dict[str, Any]:
        return {
            "rules": [
                {"action": "FailJob",
                 "onExitCodes": {"operator": "In", "values": [PERMANENT_EXIT_CODE]}},
                {"action": "Ignore",
                 "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        }  # fmt: skip

    def config_map(self, files: dict[str, str]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": self.metadata("study"),
                "data": files}  # fmt: skip

    def create_job(self, files: dict[str, str]) -> dict[str, Any]:
        o = self.options
        args = ["tuner", "study", "create", "--features", FEATURES_MOUNT, "--trials",
                str(o.trials), "--pruner", o.pruner, "--sampler", o.sampler]  # fmt: skip
        if o.checkpoints_claim is not None:
            args += ["--checkpoints", CHECKPOINTS_MOUNT]
        for key, flag in (("space.yaml", "--space"), ("config.yaml", "--config")):
            if key in files:
                args += [flag, f"{STUDY_FILES_MOUNT}/{key}"]
        volumes, mounts = self.volumes(study_files=bool(files))
        container = self.container(
            "create", [*args, "--", self.study], volumeMounts=mounts,
            resources={"requests": {"cpu": "1", "memory": "2Gi"}},
        )  # fmt: skip
        spec = {"restartPolicy": "Never", "containers": [container], "volumes": volumes}
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": self.metadata("create"),
            "spec": {
                "backoffLimit": 2,
                "podFailurePolicy": self.failure_policy(),
                "template": self.pod("create", spec),
            },
        }

    def worker_job(self) -> dict[str, Any]:
        o = self.options
        if o.gpus_per_worker == 1:
            args = ["tuner", "worker", "--device", "cuda", "--features", FEATURES_MOUNT]
            if o.checkpoints_claim is not None:
                args += ["--checkpoints", CHECKPOINTS_MOUNT]
        else:  # the study records FEATURES_MOUNT and CHECKPOINTS_MOUNT (the create Job)
            gpus = ",".join(str(i) for i in range(o.gpus_per_worker))
            args = ["tuner", "launch", "--gpus", gpus, "--max-restarts", str(o.max_restarts)]
        volumes, mounts = self.volumes()
        worker = self.container(
            "worker", [*args, "--", self.study], volumeMounts=mounts,
            resources={
                "requests": {"cpu": str(o.cpus_per_worker)},
                "limits": {"nvidia.com/gpu": str(o.gpus_per_worker)},
            },
        )  # fmt: skip
        tries = STUDY_WAIT_SECONDS // 10
        wait = self.container(
            "wait-for-study",
            ["sh", "-c",
             f'for i in $(seq {tries}); do tuner -q status -- "$1" >/dev/null && exit 0; '
             f'sleep 10; done; echo "study $1 not found after {STUDY_WAIT_SECONDS} s: see the '
             f'logs of job/{self.prefix}-create" >&2; exit {PERMANENT_EXIT_CODE}',
             "wait-for-study", self.study],
            resources={"requests": {"cpu": "100m", "memory": "256Mi"}},
        )  # fmt: skip
        spec = {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": GRACE_SECONDS,
            "initContainers": [wait],
            "containers": [worker],
            "volumes": volumes,
        }
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": self.metadata("workers"),
            "spec": {
                "parallelism": o.workers,
                "completions": o.workers,
                "backoffLimit": o.max_restarts * o.workers,
                "podFailurePolicy": self.failure_policy(),
                "template": self.pod("worker", spec),
            },
        }

    def dashboard(self) -> dict[str, Any]:
        args = ["tuner", "dashboard", "--host", "0.0.0.0", "--port", str(DASHBOARD_PORT),
                "--read-only"]  # fmt: skip
        container = self.container(
            "dashboard", args,
            ports=[{"name": "http", "containerPort": DASHBOARD_PORT}],
            readinessProbe={"httpGet": {"path": "/api/meta", "port": "http"}},
            resources={"requests": {"cpu": "250m", "memory": "512Mi"}},
        )  # fmt: skip
        spec = {"containers": [container]}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": self.metadata("dashboard"),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": self.labels("dashboard")},
                "template": self.pod("dashboard", spec),
            },
        }

    def service(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self.metadata("dashboard"),
            "spec": {
                "type": "ClusterIP",
                "selector": self.labels("dashboard"),
                "ports": [{"name": "http", "port": DASHBOARD_PORT, "targetPort": "http"}],
            },
        }
