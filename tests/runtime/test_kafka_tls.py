"""Every Quasar client through TLS, end to end: stunnel (with a CA this test makes) terminates TLS in front
of an embedded broker that advertises the TLS address, so after bootstrap every client follows the
metadata back to the TLS port. `quasar worker` and `quasar gateway` run as real processes configured only
through QUASAR_KAFKA_SECURITY_PROTOCOL / QUASAR_KAFKA_SSL_CA_LOCATION; a sync request and an async record
go through. Proof that TLS carries the traffic: the processes' TCP connections all go to the TLS port,
none to the plaintext one, and stunnel accepted at least as many TLS connections as they hold."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psutil
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from app.kafka.broker import EmbeddedBroker, free_port
from app.kafka.config import admin_config, reader_config
from app.kafka.names import TopicNames
from app.settings import Settings
from bench.faults import (
    RID_WORKFLOW,
    Proc,
    _admin_setup,
    _apply_topics,
    _sync_channel_doc,
    quasar_env,
    spawn,
    wait_ready,
)
from tests.fixtures.kafka import make_test_settings, probe_unreachable_status
from tests.fixtures.polling import poll
from tests.fixtures.tls import Stunnel, make_pki

WORKFLOW = {**RID_WORKFLOW, "workflow_id": "tls-wf", "name": "tls-wf"}


class TlsCluster:
    def __init__(self, settings: Settings, plain_port: int, tls_port: int, stunnel: Stunnel) -> None:
        self.settings = settings
        self.plain_port = plain_port
        self.tls_port = tls_port
        self.stunnel = stunnel


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    directory = tmp_path_factory.mktemp("tls")
    pki = make_pki(directory)
    plain_port, tls_port = free_port(), free_port()
    with (
        Stunnel(pki, accept_port=tls_port, connect_port=plain_port, directory=directory) as stunnel,
        EmbeddedBroker(port=plain_port, advertised=f"127.0.0.1:{tls_port}"),
    ):
        settings = make_test_settings(
            f"127.0.0.1:{tls_port}",
            kafka_security_protocol="SSL",
            kafka_ssl_ca_location=str(pki.ca),
            session_timeout_ms=2000,
        )
        yield TlsCluster(settings, plain_port, tls_port, stunnel)


def _spawn(cluster: TlsCluster, kind: str, port: int, logs: Path) -> Proc:
    env = quasar_env(
        cluster.settings,
        QUASAR_KAFKA_SECURITY_PROTOCOL="SSL",
        QUASAR_KAFKA_SSL_CA_LOCATION=str(cluster.settings.kafka_ssl_ca_location),
        QUASAR_INSTANCE_ID=f"tls-{kind}",
    )
    flag = "--metrics-port" if kind == "worker" else "--port"
    return spawn(f"tls-{kind}", [sys.executable, "-m", "app.cli", kind, flag, str(port)], env, logs)


def _broker_ports(proc: Proc, cluster: TlsCluster) -> list[int]:
    """Remote ports of `proc`'s TCP connections to the broker's ports (TLS or plaintext)."""
    ports = {cluster.tls_port, cluster.plain_port}
    return [
        c.raddr.port
        for c in psutil.Process(proc.popen.pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED
    ]


def test_the_tls_port_refuses_plaintext_kafka(tls_cluster: TlsCluster) -> None:
    """The control: a plaintext client on the TLS port gets no metadata, so TLS is really in the path."""
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{tls_cluster.tls_port}", "log_level": 0})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)


def test_the_broker_probe_names_an_untrusted_certificate(tls_cluster: TlsCluster, tmp_path: Path) -> None:
    """A client that trusts another CA: health reports the TLS failure, not a bare transport failure."""
    settings = tls_cluster.settings.model_copy(update={"kafka_ssl_ca_location": str(make_pki(tmp_path).ca)})
    status = probe_unreachable_status(settings, "quasar.config")
    assert "SSL handshake failed" in status and "certificate verify failed" in status, status


def test_worker_and_gateway_serve_sync_and_async_traffic_over_tls(tls_cluster: TlsCluster, tmp_path: Path) -> None:
    settings = tls_cluster.settings
    names = TopicNames(settings.topic_prefix)
    # The admin client (topics) is the first Quasar client through TLS.
    assert admin_config(settings)["security.protocol"] == "SSL"
    _apply_topics(settings, channels=("tls-sync", "tls-async"), outputs=("tls-async",))
    wport, gport = free_port(), free_port()
    worker = _spawn(tls_cluster, "worker", wport, tmp_path)
    gateway = _spawn(tls_cluster, "gateway", gport, tmp_path)
    try:
        wait_ready(f"http://127.0.0.1:{wport}/readyz", worker, 90)
        base = f"http://127.0.0.1:{gport}"
        wait_ready(f"{base}/readyz", gateway, 90)
        async_doc = {**_sync_channel_doc("tls-async", "tls-wf", {"output": True}), "channel_type": "async"}
        _admin_setup(base, [WORKFLOW], [_sync_channel_doc("tls-sync", "tls-wf"), async_doc])

        # Sync: HTTP -> gateway producer -> channel topic -> worker -> replies -> gateway reply router.
        def sync_ok() -> dict[str, object] | None:
            r = httpx.post(f"{base}/api/v1/data/tls-sync", json={"data": {"n": 1}}, timeout=30)
            return r.json() if r.status_code == 200 else None

        body = poll(sync_ok, within=60, what="a sync reply through TLS")
        assert '"done":true' in orjson.dumps(body).decode(), body

        # Async: the gateway's producer puts the record on the channel topic (202), the worker writes
        # the output, a TLS reader built by Quasar's builder reads it back.
        marker = uuid.uuid4().hex
        r = httpx.post(f"{base}/api/v1/data/tls-async/async", json={"data": {"marker": marker}}, timeout=30)
        assert r.status_code == 202, r.text
        reader = Consumer(reader_config(settings, client_id="tls-test-reader"))
        try:
            parts = reader.list_topics(names.output("tls-async"), timeout=10).topics[names.output("tls-async")]
            reader.assign([TopicPartition(names.output("tls-async"), p, 0) for p in parts.partitions])

            def output_seen() -> bool:
                msg = reader.poll(0.2)
                return msg is not None and msg.error() is None and marker.encode() in (msg.value() or b"")

            poll(output_seen, within=60, what="the async record's output through TLS")
        finally:
            reader.close()

        # Every broker connection the processes hold goes to the TLS port; none to the plaintext one.
        for proc in (worker, gateway):
            ports = _broker_ports(proc, tls_cluster)
            assert ports, f"{proc.name} holds no broker connection\n{proc.tail()}"
            assert set(ports) == {tls_cluster.tls_port}, (proc.name, ports, tls_cluster.plain_port)
        held = len(_broker_ports(worker, tls_cluster)) + len(_broker_ports(gateway, tls_cluster))
        assert tls_cluster.stunnel.accepted() >= held, tls_cluster.stunnel.log_text()[-2000:]
        assert worker.alive and gateway.alive
    finally:
        gateway.stop()
        worker.stop()
