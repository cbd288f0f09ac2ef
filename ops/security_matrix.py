"""Regenerate the route matrix of docs/security.md from the code (`python ops/security_matrix.py`).

tests/governance/test_roles.py checks the table against `app.identity.required_permission` and sweeps every
route through a real gateway, so the table is what the gateway enforces."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "security.md"
HEADER = "| route | roles allowed |\n|---|---|\n"
ROLE_ROUTES = ("/api/v1/admin", "/api/v1/tasks")  # routes whose permission comes from app.identity


def render() -> str:
    from app.gateway.app import create_app
    from app.identity import ROLES, matrix
    from app.settings import Settings

    app = create_app(Settings())
    routes = [(m.upper(), p) for p, ops in app.openapi()["paths"].items() if p.startswith(ROLE_ROUTES) for m in ops]
    rows = [
        f"| `{method} {route}` | {', '.join(r for r in ROLES if allowed[r])} |"
        for (method, route), allowed in matrix(routes).items()
    ]
    text = DOC.read_text()
    return text[: text.index(HEADER)] + HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    DOC.write_text(render())
    print(f"wrote {DOC}")
