"""Flow versions and schedules as the config store folded them (compiled at fold time, never here)."""

from __future__ import annotations

from dataclasses import replace

from app.config_store.state import ConfigState
from app.flows.compiler import CompiledFlow, CompiledSchedule
from app.flows.models import ExternalTaskStep

__all__ = ["FlowCatalog"]


class FlowCatalog:
    """Looks flows and schedules up in a `ConfigState` (the reader's, kept current by its thread)."""

    def __init__(self, state: ConfigState) -> None:
        self.state = state
        self._pinned: dict[tuple[str, int], tuple[object, CompiledFlow]] = {}

    def flow(self, flow_id: str, version: int) -> CompiledFlow | None:
        """The compiled `version` of `flow_id`, whatever its status (running instances keep their version)."""
        obj = self.state.get("flow", flow_id)
        result = obj.compiled.get(version) if obj is not None else None
        if result is None or not result.valid or not isinstance(result.compiled, CompiledFlow):
            return None
        cached = self._pinned.get((flow_id, version))
        if cached is not None and cached[0] is result.compiled:
            return cached[1]
        # Compile results are shared between versions with the same content: pin the version number here.
        pinned = replace(result.compiled, doc=result.compiled.doc.model_copy(update={"version": version}))
        self._pinned[(flow_id, version)] = (result.compiled, pinned)
        return pinned

    def active_version(self, flow_id: str) -> int | None:
        obj = self.state.get("flow", flow_id)
        if obj is None or not obj.active:
            return None
        return max(obj.active)

    def handlers(self) -> set[str]:
        """Every `external_task` handler of a valid flow version that is active (their topics must exist)."""
        found: set[str] = set()
        for obj in self.state.objects("flow"):
            for version in obj.active:
                result = obj.compiled.get(version)
                compiled = result.compiled if result is not None and result.valid else None
                if isinstance(compiled, CompiledFlow):
                    found.update(step.handler for step in compiled.steps.values() if isinstance(step, ExternalTaskStep))
        return found

    def schedules(self) -> list[CompiledSchedule]:
        """Active, enabled, valid schedules (the newest active version of each)."""
        found: list[CompiledSchedule] = []
        for obj in self.state.objects("schedule"):
            if not obj.active:
                continue
            result = obj.compiled.get(max(obj.active))
            compiled = result.compiled if result is not None and result.valid else None
            if isinstance(compiled, CompiledSchedule) and compiled.doc.enabled:
                found.append(compiled)
        return found
