"""docker-compose.yml: valid by the Compose schema, safe by default, and its services' commands
run natively against a real PostgreSQL server set up by storage/init.sql."""

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

import jsonschema
import pytest
import yaml

from tests.pg import free_port, throwaway_cluster, wait_until
from tuner.features import FeatureStore

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator(schema).validate(compose)
    assert set(compose["services"]) == {"postgres", "create-study", "worker", "dashboard"}


def test_compose_is_safe_by_default(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
        for key in service.get("environment") or {}:
            assert "PASSWORD" not in key or key.endswith("_FILE"), f"{name} sets {key} in clear"
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"postgresql://[^@\s]*:[^@\s]*@", text), "a password in a storage URL"
    postgres = services["postgres"]
    assert postgres["healthcheck"]["test"]
    assert any(v.startswith("pgdata:") for v in postgres["volumes"])
    worker = services["worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert worker["depends_on"]["create-study"]["condition"] == "service_completed_successfully"
    for name in ("create-study", "worker", "dashboard"):
        assert any(v.endswith(":/data/features:ro") for v in services[name]["volumes"])
    assert services["create-study"]["restart"] == "no"


def test_compose_passes_the_study_name_as_one_argument(compose: dict[str, Any]) -> None:
    """Exec-form commands (lists) reach tuner without a shell: a name with spaces or quotes in
    TUNER_STUDY stays one argument, and nothing in it runs."""
    for name, service in compose["services"].items():
        if name == "postgres":
            continue
        command = service["command"]
        assert isinstance(command, list), f"{name} runs its command through a shell"
        assert "entrypoint" not in service
        studies = [part for part in command if "TUNER_STUDY" in str(part)]
        assert studies in ([], ["${TUNER_STUDY:-mil}"]), f"{name}: {studies}"
        env = {"TUNER_STUDY": "my study; touch x"}
        expanded = [expand(str(part), env) for part in command]
        assert expanded.count("my study; touch x") == len(studies)


def expand(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR:-default} substitution."""
    return re.sub(
        r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1)) or (m.group(2) or ""), value
    )


def service_command(compose: dict[str, Any], name: str, env: dict[str, str]) -> list[str]:
    return [expand(str(part), env) for part in compose["services"][name]["command"]]


def native(command: list[str], store: FeatureStore) -> list[str]:
    """The container's command run here: our interpreter, our store, the CPU."""
    assert command[0] == "tuner"
    args = [str(store.path) if a == "/data/features" else a for a in command[1:]]
    args = ["cpu" if a == "cuda" else a for a in args]
    return [sys.executable, "-m", "tuner", *args]


@pytest.mark.slow
def test_compose_services_run_natively(
    compose: dict[str, Any], store: FeatureStore, tmp_path: Path
) -> None:
    passwords = {role: f"{role}-pw-{os.getpid()}" for role in ("app", "worker", "reader")}
    with throwaway_cluster() as cluster:
        cluster.sql("CREATE DATABASE tuner")
        init = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", "-d", "tuner",
             "-v", "ON_ERROR_STOP=1", "-f", str(ROOT / "storage" / "init.sql")],
            env={**os.environ, "PGPASSWORD": cluster.password,
                 **{f"TUNER_{k.upper()}_PASSWORD": v for k, v in passwords.items()}},
            capture_output=True, text=True,
        )  # fmt: skip
        assert init.returncode == 0, init.stderr
        files = {}
        for role, password in passwords.items():
            files[role] = tmp_path / f"{role}.pw"
            files[role].write_text(password + "\n")
        # no pruning: on the 8-case store nothing beats chance, and the dashboard needs a best
        compose_env = {"TUNER_STUDY": "compose", "TUNER_TRIALS": "2", "TUNER_PRUNER": "none"}

        def run_as(
            role: str, command: list[str], **kwargs: Any
        ) -> subprocess.CompletedProcess[str]:
            env = {
                **os.environ,
                "TUNER_STORAGE": f"postgresql://tuner_{role}@127.0.0.1:{cluster.port}/tuner",
                "TUNER_DB_PASSWORD_FILE": str(files[role]),
            }
            env.pop("PGPASSWORD", None)
            return subprocess.run(command, env=env, capture_output=True, text=True, **kwargs)

        created = run_as(
            "app", native(service_command(compose, "create-study", compose_env), store)
        )
        assert created.returncode == 0, created.stderr
        assert "study compose created: 2 trials" in created.stdout

        worker = run_as(
            "worker", native(service_command(compose, "worker", compose_env), store), timeout=600
        )
        assert worker.returncode == 0, worker.stderr
        assert "2 of 2 trials finished" in worker.stderr

        # the worker role reads and writes the study tables, and can do nothing else
        denied = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "tuner_worker",
             "-d", "tuner", "-c", "DROP TABLE trials"],
            env={**os.environ, "PGPASSWORD": passwords["worker"]}, capture_output=True, text=True,
        )  # fmt: skip
        assert denied.returncode != 0
        assert "must be owner" in denied.stderr

        # the dashboard: read-only, as the reader role, and still the whole study on show
        port = free_port()
        command = native(service_command(compose, "dashboard", compose_env), store)
        assert "--read-only" in command
        command[command.index("8080")] = str(port)
        env = {
            **os.environ,
            "TUNER_STORAGE": compose["services"]["dashboard"]["environment"][
                "TUNER_STORAGE"
            ].replace("@postgres:5432", f"@127.0.0.1:{cluster.port}"),
            "TUNER_DB_PASSWORD_FILE": str(files["reader"]),
        }
        assert env["TUNER_STORAGE"].startswith("postgresql://tuner_reader@")
        env.pop("PGPASSWORD", None)
        server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{port}"
        try:

            def get(path: str) -> Any:
                try:
                    with urllib.request.urlopen(base + path, timeout=5) as r:
                        return json.load(r)
                except OSError:
                    return None

            assert wait_until(lambda: get("/api/studies") is not None, timeout=60)
            listed = get("/api/studies")["study_summaries"]
            assert [s["study_name"] for s in listed] == ["compose"]
            detail = get(f"/api/studies/{listed[0]['study_id']}")
            assert detail is not None, server.stderr
            assert len(detail["trials"]) == 2
            assert detail["best_trials"]
            delete = urllib.request.Request(
                f"{base}/api/studies/{listed[0]['study_id']}", method="DELETE"
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(delete, timeout=5)
            assert refused.value.code == 405
        finally:
            server.terminate()
            _, stderr = server.communicate(timeout=30)
        assert "no authentication" in stderr
        assert "(read-only)" in stderr

        # and the reader role could not have written had the dashboard tried
        for sql in ("DELETE FROM trials", "UPDATE studies SET study_name = 'x'"):
            refused_sql = subprocess.run(
                ["psql", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "tuner_reader",
                 "-d", "tuner", "-v", "ON_ERROR_STOP=1", "-c", sql],
                env={**os.environ, "PGPASSWORD": passwords["reader"]},
                capture_output=True, text=True,
            )  # fmt: skip
            assert refused_sql.returncode != 0
            assert "permission denied" in refused_sql.stderr
        for password in passwords.values():
            assert (
                password
                not in created.stdout + created.stderr + worker.stdout + worker.stderr + stderr
            )
