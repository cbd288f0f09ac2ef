"""schemathesis against the gateway's OpenAPI (`/api/v1/openapi.json`), every operation, over real HTTP to
a real `quasar gateway` with a real `quasar worker` and broker.

Bounded for CI: a fixed number of examples per operation, derandomized (the same cases every run). The
properties: no 5xx, every 4xx carries the standard `{"error": {"code", "message"}}` body, no answer
carries a secret planted in the config (issue 14: secrets masked everywhere), and the worker and gateway
processes stay up. Two runs: every operation on its own, then stateful sequences (schemathesis chains
operations through the links it infers: create -> read -> update -> delete of the same object) with
the same checks. The stack is this module's own: the fuzzer may restore, delete or archive whatever it
finds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from app.gateway.app import create_app
from app.settings import Settings
from tests.proof._fuzz_support import FUZZ_ENV, FuzzStack, start_fuzz_stack

MAX_EXAMPLES = 20
STATEFUL_EXAMPLES = 10  # sequences
STATEFUL_STEPS = 5  # calls per sequence
# Planted in a connector before fuzzing; no response may ever carry it (masked in every answer).
PLANTED_SECRET = "fuzzPlantedSecret9x7"
# Error statuses whose body the gateway owns; uvicorn's own parser errors never reach this far.
_SHAPED = range(400, 600)


@pytest.fixture(scope="module")
def openapi_stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzStack]:
    with start_fuzz_stack(kafka_bootstrap, tmp_path_factory.mktemp("openapi"), FUZZ_ENV) as stack:
        stack.admin("POST", "/connectors", {
            "id": "fuzz-secret", "name": "fuzz-secret", "connector_type": "http",
            "config": {"type": "http", "url": f"https://fuzz:{PLANTED_SECRET}@api.example.test/",
                       "headers": {"Authorization": f"Bearer {PLANTED_SECRET}"},
                       "auth": {"type": "apikey", "key": PLANTED_SECRET}},
        })  # fmt: skip
        yield stack
        # Nothing the fuzzer made the processes log may carry the secret either.
        for name in ("gateway", "worker"):
            assert PLANTED_SECRET not in stack.log(name), f"{name} log carries the planted secret"


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx at all (the fuzz stack runs a worker, so even 503/504 would be a bug here)."""
    if response.status_code >= 500:
        raise AssertionError(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}")
    return None


def standard_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every error answer is JSON `{"error": {"code": str, "message": str}}`."""
    if response.status_code not in _SHAPED:
        return None
    where = f"{case.method} {case.formatted_path} -> {response.status_code}"
    ctype = response.headers.get("content-type", [""])
    ctype = ctype[0] if isinstance(ctype, list) else ctype
    assert ctype.startswith("application/json"), f"{where}: content-type {ctype!r}"
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"{where}: {response.text[:300]}"
    err = body["error"]
    assert isinstance(err.get("code"), str) and err["code"], f"{where}: {err}"
    assert isinstance(err.get("message"), str) and err["message"], f"{where}: {err}"
    return None


def no_planted_secret(ctx: Any, response: Any, case: Any) -> bool | None:
    """No answer carries a secret that was written into the config (masked by pattern everywhere)."""
    if PLANTED_SECRET in response.text:
        raise AssertionError(f"{case.method} {case.formatted_path} -> {response.status_code} leaks the planted secret")
    return None


CHECKS = [no_server_error, standard_error_shape, no_planted_secret]

# The document is built from the app without I/O (no server needed at collection time); the cases are
# then sent over HTTP to the running gateway, which serves the same document (checked below).
OPENAPI: dict[str, Any] = create_app(Settings(kafka_bootstrap="127.0.0.1:1")).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


def test_the_fuzzed_document_is_the_one_the_gateway_serves(openapi_stack: FuzzStack) -> None:
    served = httpx.get(f"{openapi_stack.gateway_url}/api/v1/openapi.json", timeout=10).json()
    assert served["paths"] == OPENAPI["paths"]
    assert len(OPENAPI["paths"]) > 20  # data + admin + health: a real document, not an empty one


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,  # the same cases on every run: CI stays stable
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_without_5xx_in_the_standard_shape(case: Any, openapi_stack: FuzzStack) -> None:
    response = case.call(base_url=openapi_stack.gateway_url, timeout=30)
    case.validate_response(response, checks=CHECKS)
    openapi_stack.alive()


def test_stateful_sequences_answer_without_5xx_or_secrets(openapi_stack: FuzzStack) -> None:
    """Chained calls (the object a call created is what the next reads, changes or deletes)."""

    class Sequences(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": openapi_stack.gateway_url, "timeout": 30}

        def validate_response(self, response: Any, case: Any, *args: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS)
            openapi_stack.alive()

    Sequences.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=STATEFUL_STEPS,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
