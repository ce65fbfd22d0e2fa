"""``tuner k8s``: manifests valid by the Kubernetes schemas, safe, and whose commands run.

No cluster runs here: every document is checked against the OpenAPI schemas that
``kubernetes-validate`` bundles (offline, strict: unknown fields are errors), the parts that
matter are asserted, and the commands the containers run are run natively against a real
PostgreSQL study, as ``test_deployment.py`` does for the Compose file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.pg import free_port, fresh_database, wait_until
from tuner.errors import PERMANENT_EXIT_CODE, TunerError
from tuner.features import FeatureStore
from tuner.study import K8sOptions, k8s_manifests
from tuner.study._k8s import CHECKPOINTS_MOUNT, FEATURES_MOUNT, STUDY_FILES_MOUNT, object_prefix

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "search_spaces" / "quick.yaml"
STORAGE = "postgresql://tuner_app@db.cluster.local:5432/tuner"
# podFailurePolicy is GA from 1.31; check the oldest version we support and the newest bundled.
VERSIONS = ("1.31.0", kubernetes_validate.latest_version())


def documents(text: str) -> dict[str, dict[str, Any]]:
    """The manifests by kind and component: "Job/workers", "Service/dashboard", ..."""
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    by = {f"{d['kind']}/{d['metadata']['labels']['app.kubernetes.io/component']}": d for d in docs}
    assert len(by) == len(docs), "two documents of the same kind and component"
    return by


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    spec = pod_spec(doc)
    found = [c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name]
    assert len(found) == 1
    return found[0]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    config = {"data": {"features": FEATURES_MOUNT}, "train": {"epochs": 2, "device": "cpu"}}
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("gpus", [1, 4])
@pytest.mark.parametrize("extras", [False, True], ids=["plain", "checkpoints+files"])
def test_every_manifest_validates_against_the_kubernetes_schemas(
    gpus: int, extras: bool, config_file: Path
) -> None:
    options = K8sOptions(
        workers=8, gpus_per_worker=gpus, checkpoints_claim="tuner-ckpt" if extras else None,
        space=QUICK if extras else None, config=config_file if extras else None,
    )  # fmt: skip
    docs = documents(k8s_manifests("mil", options, storage=STORAGE))
    expected = {"Job/create", "Job/workers", "Deployment/dashboard", "Service/dashboard"}
    assert set(docs) == expected | ({"ConfigMap/study"} if extras else set())
    for doc in docs.values():
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_what_a_cluster_would() -> None:
    """The schema check has teeth: a misspelt field and a wrong type fail it."""
    job = documents(k8s_manifests("mil", K8sOptions(workers=2), storage=STORAGE))["Job/workers"]
    misspelt = json.loads(json.dumps(job))
    misspelt["spec"]["template"]["spec"]["restartpolicy"] = "Never"
    wrong_type = json.loads(json.dumps(job))
    wrong_type["spec"]["parallelism"] = "two"
    for bad in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, VERSIONS[0], strict=True)


def test_worker_job_fails_at_once_on_the_permanent_exit_code_and_retries_the_rest() -> None:
    options = K8sOptions(workers=6, gpus_per_worker=2, checkpoints_claim="tuner-ckpt")
    docs = documents(k8s_manifests("mil", options, storage=STORAGE))
    job = docs["Job/workers"]
    assert job["spec"]["parallelism"] == job["spec"]["completions"] == 6
    assert job["spec"]["backoffLimit"] == 6 * options.max_restarts
    for name in ("Job/workers", "Job/create"):
        # Kubernetes accepts a podFailurePolicy only with restartPolicy Never.
        assert pod_spec(docs[name])["restartPolicy"] == "Never"
        rules = docs[name]["spec"]["podFailurePolicy"]["rules"]
        fail = [r for r in rules if r["action"] == "FailJob"]
        codes = {"operator": "In", "values": [PERMANENT_EXIT_CODE]}
        assert fail == [{"action": "FailJob", "onExitCodes": codes}]
        assert "containerName" not in fail[0]["onExitCodes"]  # the init container's too
        ignored = [r for r in rules if r["action"] == "Ignore"]
        assert ignored[0]["onPodConditions"][0]["type"] == "DisruptionTarget"
    assert PERMANENT_EXIT_CODE == 78
    spec = pod_spec(job)
    assert spec["terminationGracePeriodSeconds"] >= 60
    worker = container(job, "worker")
    assert worker["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert worker["args"][:4] == ["tuner", "launch", "--gpus", "0,1"]
    assert worker["args"][-2:] == ["--", "mil"]
    # the feature store read-only, the checkpoints writable, at the paths the study records
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in worker["volumeMounts"]}
    assert volumes["features"]["persistentVolumeClaim"] == {
        "claimName": "tuner-features", "readOnly": True}  # fmt: skip
    assert mounts["features"] == {
        "name": "features",
        "mountPath": FEATURES_MOUNT,
        "readOnly": True,
    }
    assert volumes["checkpoints"]["persistentVolumeClaim"] == {"claimName": "tuner-ckpt"}
    assert mounts["checkpoints"]["mountPath"] == CHECKPOINTS_MOUNT
    assert not mounts["checkpoints"].get("readOnly")
    create = container(docs["Job/create"], "create")["args"]
    assert create[create.index("--features") + 1] == FEATURES_MOUNT
    assert create[create.index("--checkpoints") + 1] == CHECKPOINTS_MOUNT
    one_gpu = documents(k8s_manifests("mil", K8sOptions(workers=1), storage=STORAGE))
    args = container(one_gpu["Job/workers"], "worker")["args"]
    assert args == ["tuner", "worker", "--device", "cuda", "--features", FEATURES_MOUNT, "--",
                    "mil"]  # fmt: skip
    assert container(one_gpu["Job/workers"], "worker")["resources"]["limits"] == {
        "nvidia.com/gpu": "1"}  # fmt: skip


def test_password_comes_from_a_secret_and_appears_nowhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password = "pw-that-must-not-leak-7f3a"
    monkeypatch.setenv("PGPASSWORD", password)
    (tmp_path / "pw").write_text(password)
    monkeypatch.setenv("TUNER_DB_PASSWORD_FILE", str(tmp_path / "pw"))
    options = K8sOptions(workers=2, secret="study-db")
    text = k8s_manifests(
        "mil", options, storage=f"postgresql://tuner_app:{password}@db:5432/tuner"
    )
    assert password not in text
    assert password not in caplog.text
    assert "left out of the manifests" in caplog.text
    docs = documents(text)
    for name in ("Job/create", "Job/workers", "Deployment/dashboard"):
        spec = pod_spec(docs[name])
        for c in spec["containers"] + spec.get("initContainers", []):
            env = {e["name"]: e for e in c["env"]}
            assert env["TUNER_STORAGE"]["value"] == "postgresql+psycopg2://tuner_app@db:5432/tuner"
            assert env["PGPASSWORD"] == {"name": "PGPASSWORD", "valueFrom": {
                "secretKeyRef": {"name": "study-db", "key": "password"}}}  # fmt: skip
            assert "value" not in env["PGPASSWORD"]


def test_dashboard_is_read_only_and_stays_inside_the_cluster() -> None:
    docs = documents(k8s_manifests("mil", K8sOptions(workers=2), storage=STORAGE))
    service = docs["Service/dashboard"]
    assert service["spec"]["type"] == "ClusterIP"
    assert all("nodePort" not in p for p in service["spec"]["ports"])
    deployment = docs["Deployment/dashboard"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"][
        "labels"].items()  # fmt: skip
    dashboard = container(deployment, "dashboard")
    assert "--read-only" in dashboard["args"]
    assert "--allow-writes" not in dashboard["args"]
    assert not any(k in yaml.safe_dump(docs) for k in ("Ingress", "LoadBalancer", "NodePort"))


@pytest.mark.parametrize("study", ["mil", "MIL", "mil_v2.1", "x" * 80, "___", "Étude pathologie"])
def test_object_names_are_dns_labels_and_distinct(study: str) -> None:
    prefix = object_prefix(study)
    name = f"{prefix}-dashboard"
    assert len(name) <= 47
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
    if study != "mil":
        assert prefix != object_prefix("mil")
    assert object_prefix(study.upper() + "x") != prefix
    # the study name itself reaches the containers unchanged, as an argument, never a shell word
    text = k8s_manifests(study, K8sOptions(workers=1), storage=STORAGE)
    job = documents(text)["Job/workers"]
    assert container(job, "worker")["args"][-1] == study
    assert container(job, "wait-for-study")["args"][-1] == study


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"workers": 0}, "workers must be at least 1, but got 0"),
        ({"gpus_per_worker": 0}, "gpus_per_worker must be at least 1"),
        ({"features_claim": "My_Claim"}, "features_claim 'My_Claim' is not a Kubernetes"),
        ({"secret": "db password"}, "secret 'db password' is not a Kubernetes object name"),
        ({"image": "tuner latest"}, "is not an image reference"),
        ({"pruner": "best"}, "pruner must be one of median, asha, hyperband, chance, none"),
    ],
)
def test_bad_options_are_refused_with_the_fix(change: dict[str, Any], message: str) -> None:
    with pytest.raises(TunerError, match=message):
        k8s_manifests("mil", K8sOptions(**{"workers": 2, **change}), storage=STORAGE)


def test_a_cluster_needs_postgres(tmp_path: Path) -> None:
    with pytest.raises(TunerError, match="needs a shared PostgreSQL"):
        k8s_manifests("mil", K8sOptions(workers=2), storage=f"sqlite:///{tmp_path}/t.db")


def native(args: list[str], paths: dict[str, str]) -> list[str]:
    """A container's command run here: our interpreter, our files, the CPU."""
    assert args[0] == "tuner"
    out = []
    for a in args[1:]:
        for mount, here in paths.items():
            a = a.replace(mount, here) if a.startswith(mount) else a
        out.append("cpu" if a == "cuda" else a)
    return [sys.executable, "-m", "tuner", *out]


@pytest.mark.slow
def test_the_containers_commands_run_natively(
    store: FeatureStore, config_file: Path, tmp_path: Path
) -> None:
    """Create Job, the worker pod's wait and worker, and the dashboard, in the manifests' order,
    against a real Postgres study, with the environment the manifests give each container."""
    study = "MIL_v2.1"
    with fresh_database() as url:
        options = K8sOptions(
            workers=1, checkpoints_claim="ckpt", trials=2, space=QUICK, config=config_file
        )
        docs = documents(k8s_manifests(study, options, storage=url))
        files = tmp_path / "etc-tuner"
        files.mkdir()
        for key, text in docs["ConfigMap/study"]["data"].items():
            (files / key).write_text(text)
        paths = {FEATURES_MOUNT: str(store.path), CHECKPOINTS_MOUNT: str(tmp_path / "ckpt"),
                 STUDY_FILES_MOUNT: str(files)}  # fmt: skip

        def env_of(c: dict[str, Any]) -> dict[str, str]:
            values = {e["name"]: e.get("value", "") for e in c["env"]}  # the Secret: trust auth
            return {**os.environ, **values}

        create = container(docs["Job/create"], "create")
        created = subprocess.run(native(create["args"], paths), env=env_of(create),
                                 capture_output=True, text=True, timeout=300)  # fmt: skip
        assert created.returncode == 0, created.stderr
        assert f"study {study} created: 2 trials" in created.stdout

        wait = container(docs["Job/workers"], "wait-for-study")
        assert wait["args"][0] == "sh"
        bin_dir = str(Path(sys.executable).parent)  # where the `tuner` script is installed
        wait_env = {**env_of(wait), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        waited = subprocess.run(wait["args"], env=wait_env, capture_output=True, text=True,
                                timeout=120)  # fmt: skip
        assert waited.returncode == 0, waited.stderr

        worker = container(docs["Job/workers"], "worker")
        ran = subprocess.run(native(worker["args"], paths), env=env_of(worker),
                             capture_output=True, text=True, timeout=600)  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        assert "2 of 2 trials finished" in ran.stderr
        assert any((tmp_path / "ckpt").iterdir()), "no checkpoint folder made by the worker"

        dash = container(docs["Deployment/dashboard"], "dashboard")
        port = free_port()
        command = native(dash["args"], {})
        command[command.index(str(dash["ports"][0]["containerPort"]))] = str(port)
        server = subprocess.Popen(command, env=env_of(dash), stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{port}"
        try:

            def get(path: str) -> Any:
                try:
                    with urllib.request.urlopen(base + path, timeout=2) as r:
                        return json.load(r)
                except OSError:
                    return None

            assert wait_until(lambda: get("/api/studies") is not None, timeout=60)
            assert get(dash["readinessProbe"]["httpGet"]["path"]) is not None
            (listed,) = get("/api/studies")["study_summaries"]
            assert listed["study_name"] == study
            request = urllib.request.Request(
                f"{base}/api/studies/{listed['study_id']}", method="DELETE"
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code == 405
            assert [s["study_name"] for s in get("/api/studies")["study_summaries"]] == [study]
        finally:
            server.terminate()
            server.communicate(timeout=30)
