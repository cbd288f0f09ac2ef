"""Admin keys with roles and scopes: the route -> permission table, and a sweep of every admin route x every
role through a real gateway on the real broker (keys created through the API, stored hashed on the config
topic). The documented matrix (docs/security.md) must be the one the code enforces."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.gateway.app import create_app
from app.identity import ROLES, KeyScope, Permission, Principal, hash_key, matrix, required_permission
from app.settings import Settings
from tests.fixtures.kafka import make_test_settings
from tests.gateway.conftest import Gateway, apply_quasar_topics, start_gateway

ROOT_KEY = "root-admin-key-for-tests"
TASKS = [{"id": "t", "name": "t", "function": {"name": "map", "input": {"mappings": [{"path": "data.x", "logic": 1}]}}}]
DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def admin_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    for path, ops in app.openapi()["paths"].items():
        if path.startswith(("/api/v1/admin", "/api/v1/tasks")):
            for method in ops:
                yield method.upper(), path


# -- the pure table ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "route", "need"),
    [
        ("GET", "/api/v1/admin/workflows", Permission.READ),
        ("GET", "/api/v1/admin/backup", Permission.ADMIN),
        ("POST", "/api/v1/admin/backup", Permission.ADMIN),
        ("POST", "/api/v1/admin/workflows", Permission.EDIT),
        ("PUT", "/api/v1/admin/workflows/{object_id}", Permission.EDIT),
        ("POST", "/api/v1/admin/workflows/{object_id}/versions", Permission.EDIT),
        ("POST", "/api/v1/admin/workflows/validate", Permission.EDIT),
        ("POST", "/api/v1/admin/workflows/{object_id}/test", Permission.EDIT),
        ("PATCH", "/api/v1/admin/workflows/{object_id}/status", Permission.ADMIN),
        ("PATCH", "/api/v1/admin/workflows/{object_id}/rollout", Permission.ADMIN),
        ("POST", "/api/v1/admin/workflows/{object_id}/rollback", Permission.ADMIN),
        ("DELETE", "/api/v1/admin/workflows/{object_id}", Permission.ADMIN),
        ("POST", "/api/v1/admin/connectors", Permission.ADMIN),  # connectors go live at once
        ("POST", "/api/v1/admin/restore", Permission.ADMIN),
        # Channel operations move production consumption: admins only; their status is a read.
        ("POST", "/api/v1/admin/channels/{object_id}/pause", Permission.ADMIN),
        ("POST", "/api/v1/admin/channels/{object_id}/resume", Permission.ADMIN),
        ("POST", "/api/v1/admin/channels/{object_id}/offsets", Permission.ADMIN),
        ("GET", "/api/v1/admin/channels/{object_id}/consumption", Permission.READ),
        ("POST", "/api/v1/admin/keys", Permission.ADMIN),
        ("POST", "/api/v1/admin/releases", Permission.EDIT),
        ("POST", "/api/v1/admin/releases/{release_id}/approve", Permission.APPROVE),
        ("POST", "/api/v1/admin/releases/{release_id}/execute", Permission.EDIT),
        ("POST", "/api/v1/admin/releases/{release_id}/reject", Permission.APPROVE),
        ("PUT", "/api/v1/admin/policies/{name}", Permission.ADMIN),
        ("POST", "/api/v1/admin/something-new", Permission.ADMIN),  # unclassified writes are closed
        ("POST", "/api/v1/tasks/{handler}/poll", Permission.WORK),
        ("POST", "/api/v1/tasks/{task_id}/complete", Permission.WORK),
        ("POST", "/api/v1/tasks/{task_id}/fail", Permission.WORK),
    ],
)
def test_route_permission_table(method: str, route: str, need: Permission) -> None:
    assert required_permission(method, route) is need


def test_roles_grant_what_the_docs_say() -> None:
    grants = {role: {p for p in Permission if Principal("p", role).allows(p)} for role in ROLES}
    assert grants["reader"] == {Permission.READ}
    assert grants["editor"] == {Permission.READ, Permission.EDIT}
    assert grants["approver"] == {Permission.READ, Permission.APPROVE}  # approvers do not author
    assert grants["admin"] == set(Permission)
    assert grants["worker"] == {Permission.WORK}  # the task bridge only
    assert not Principal("p", "no-such-role").allows(Permission.READ)


def test_scope_covers_ids_or_tags() -> None:
    scope = KeyScope(ids=("orders-*",), tags=("team-pay*",))
    assert scope.covers("orders-eu")
    assert not scope.covers("billing")
    assert scope.covers("billing", ["team-payments"])
    assert not scope.covers("billing", ["team-search"])
    assert KeyScope().covers("anything")


def test_documented_matrix_is_the_enforced_one() -> None:
    """docs/security.md lists every admin route with the roles allowed; it must match the code."""
    app = create_app(Settings())
    text = DOC.read_text()
    rows = dict(re.findall(r"^\| `([A-Z]+ /api/v1/(?:admin|tasks)[^`]*)` \| ([^|]+) \|", text, re.M))
    for (method, route), allowed in matrix(admin_routes(app)).items():
        roles = [r for r in ROLES if allowed[r]]
        row = f"| `{method} {route}` | {', '.join(roles)} |"  # what the table must say
        documented = rows.get(f"{method} {route}")
        assert documented is not None, f"docs/security.md lacks {row} (run python ops/security_matrix.py)"
        assert [r.strip() for r in documented.split(",")] == roles, f"docs/security.md must say: {row}"


# -- through a real gateway --------------------------------------------------------------------------
@pytest.fixture(scope="module")
async def gw(kafka_bootstrap: str) -> AsyncIterator[Gateway]:
    settings = make_test_settings(
        kafka_bootstrap, instance_id="gw-roles", admin_auth_enabled=True, admin_api_key=ROOT_KEY
    )
    apply_quasar_topics(settings)
    g = await start_gateway(settings)
    yield g
    await g.stop()


def wf(object_id: str, **extra: object) -> dict[str, object]:
    return {"workflow_id": object_id, "name": object_id, "tasks": TASKS, **extra}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _make_key(http: httpx.AsyncClient, name: str, role: str, scope: dict[str, list[str]] | None = None) -> str:
    body = {"name": name, "role": role, **({"scope": scope} if scope else {})}
    r = await http.post("/api/v1/admin/keys", json=body, headers=_auth(ROOT_KEY))
    assert r.status_code == 201, r.text
    data = r.json()["data"]
    assert data["principal"] == f"key:{name}" and data["role"] == role
    return str(data["key"])


@pytest.fixture(scope="module")
async def keys(gw: Gateway) -> dict[str, str]:
    return {role: await _make_key(gw.http, f"sweep-{role}", role) for role in ROLES}


async def test_every_admin_route_for_every_role(gw: Gateway, keys: dict[str, str]) -> None:
    expected = matrix(admin_routes(gw.app))
    assert len(expected) >= 30
    checked = 0
    for (method, route), allowed in expected.items():
        path = re.sub(r"\{[^}]+\}", "no-such-object", route)
        for role in ROLES:
            r = await gw.http.request(method, path, headers=_auth(keys[role]), json={})
            assert r.status_code != 401, (role, method, path, r.text)
            if allowed[role]:
                assert r.status_code != 403, (role, method, path, r.text)
            else:
                assert r.status_code == 403, (role, method, path, r.status_code, r.text)
                assert r.json()["error"]["code"] == "FORBIDDEN"
            checked += 1
    assert checked == len(expected) * len(ROLES)


async def test_keys_are_stored_hashed_and_never_listed(gw: Gateway, keys: dict[str, str]) -> None:
    r = await gw.http.get("/api/v1/admin/keys", headers=_auth(keys["reader"]))
    assert r.status_code == 200
    assert {k["name"] for k in r.json()["data"]} >= {f"sweep-{role}" for role in ROLES}
    backup = (await gw.http.get("/api/v1/admin/backup", headers=_auth(ROOT_KEY))).text
    for key in keys.values():
        assert key not in r.text and key not in backup
        assert hash_key(key) not in r.text
    assert hash_key(keys["editor"]) in backup  # the hash is what restores need


async def test_writes_are_audited_with_the_key_principal(gw: Gateway, keys: dict[str, str]) -> None:
    wf = {"workflow_id": "roles-audit", "name": "a", "tasks": TASKS}
    r = await gw.http.post("/api/v1/admin/workflows", json=wf, headers=_auth(keys["editor"]))
    assert r.status_code == 201, r.text

    async def audited() -> list[dict[str, object]]:
        r = await gw.http.get(
            "/api/v1/admin/audit-logs", params={"resource_id": "roles-audit"}, headers=_auth(keys["reader"])
        )
        return [e for e in r.json()["data"] if e.get("principal") == "key:sweep-editor"]

    from tests.gateway.conftest import eventually

    entries = await eventually(audited)
    assert entries[0]["action"] == "create"
    # The editor cannot activate what it wrote; the admin can.
    r = await gw.http.patch(
        "/api/v1/admin/workflows/roles-audit/status", json={"status": "active"}, headers=_auth(keys["editor"])
    )
    assert r.status_code == 403 and "admin permission" in r.json()["error"]["message"]


async def test_scoped_editor_writes_only_inside_its_scope(gw: Gateway) -> None:
    key = await _make_key(gw.http, "scoped", "editor", {"ids": ["orders-*"], "tags": ["team-pay"]})
    h = _auth(key)
    ok = await gw.http.post("/api/v1/admin/workflows", json=wf("orders-eu"), headers=h)
    assert ok.status_code == 201, ok.text
    tagged = wf("billing", tags=["team-pay"])
    assert (await gw.http.post("/api/v1/admin/workflows", json=tagged, headers=h)).status_code == 201
    out = await gw.http.post("/api/v1/admin/workflows", json=wf("search"), headers=h)
    assert out.status_code == 403 and "outside its scope" in out.json()["error"]["message"]
    # An object created by someone else, outside the scope, cannot be edited either.
    r = await gw.http.post("/api/v1/admin/workflows", json=wf("search2"), headers=_auth(ROOT_KEY))
    assert r.status_code == 201
    r = await gw.http.put("/api/v1/admin/workflows/search2", json={"name": "n", "tasks": TASKS}, headers=h)
    assert r.status_code == 403
    # Import checks every document; reads stay unscoped.
    r = await gw.http.post("/api/v1/admin/workflows/import", json=[wf("x1")], headers=h)
    assert r.status_code == 403
    assert (await gw.http.get("/api/v1/admin/workflows/search2", headers=h)).status_code == 200
    # Releases act on the object they name: out of scope -> 403, in scope -> allowed.
    r = await gw.http.post("/api/v1/admin/releases", json={"kind": "workflow", "id": "search2"}, headers=h)
    assert r.status_code == 403
    r = await gw.http.post("/api/v1/admin/releases", json={"kind": "workflow", "id": "orders-eu"}, headers=h)
    assert r.status_code == 201, r.text
    r = await gw.http.post("/api/v1/admin/releases/workflow:search2:1/cancel", json={}, headers=h)
    assert r.status_code == 403


async def test_revoked_key_no_longer_authenticates(gw: Gateway) -> None:
    key = await _make_key(gw.http, "short-lived", "reader")
    assert (await gw.http.get("/api/v1/admin/workflows", headers=_auth(key))).status_code == 200
    r = await gw.http.delete("/api/v1/admin/keys/short-lived", headers=_auth(ROOT_KEY))
    assert r.status_code == 204
    r = await gw.http.get("/api/v1/admin/workflows", headers=_auth(key))
    assert r.status_code == 401


async def test_bad_key_definitions_are_refused(gw: Gateway) -> None:
    h = _auth(ROOT_KEY)
    for body in (
        {"name": "k1", "role": "superuser"},
        {"name": "../x", "role": "reader"},
        {"name": "k2", "role": "reader", "key_hash": "sha256:" + "0" * 64},  # hashes are never client-supplied
        {"name": "k3", "role": "reader", "scope": {"channels": ["x"]}},
    ):
        r = await gw.http.post("/api/v1/admin/keys", json=body, headers=h)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["code"] in ("BAD_REQUEST", "VALIDATION_ERROR")


async def test_bootstrap_keys_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUASAR_TEST_CI_KEY", "ci-key-value")
    entries = [{"name": "ci", "role": "reader", "key": "env://QUASAR_TEST_CI_KEY"}]
    app = create_app(Settings(admin_auth_enabled=True, admin_keys=entries))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        r = await http.post("/api/v1/admin/workflows", json={}, headers=_auth("ci-key-value"))
        assert r.status_code == 403  # authenticated as key:ci, a reader
        r = await http.get("/api/v1/admin/workflows", headers=_auth("env://QUASAR_TEST_CI_KEY"))
        assert r.status_code == 401
    with pytest.raises(ValueError, match="role"):
        create_app(Settings(admin_auth_enabled=True, admin_keys=[{"name": "x", "role": "root", "key": "k"}]))
