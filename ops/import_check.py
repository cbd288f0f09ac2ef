"""Import every module of the installed `app` package (CI runs it on each supported Python but the one the
suite runs on). Run as a script from outside the source tree's root so the installed package is used."""

from __future__ import annotations

import importlib
import pkgutil
import sys


def main() -> int:
    import app

    failures: list[str] = []
    # `__main__` modules run the CLI when imported.
    names = [m.name for m in pkgutil.walk_packages(app.__path__, prefix="app.") if not m.name.endswith(".__main__")]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # report every failing module, not just the first
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    version = ".".join(map(str, sys.version_info[:3]))
    if failures:
        print(f"python {version}: {len(failures)} of {len(names)} modules failed to import", file=sys.stderr)
        print("\n".join(failures), file=sys.stderr)
        return 1
    print(f"python {version}: imported {len(names)} modules of {app.__file__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
