"""Durable flows, the pure core: documents, compilation, the instance state machine, timers, cron.

No Kafka, HTTP or Faust here (a test checks); `app.flows.runtime` runs this on Kafka.

flow = compile_flow(doc)                                        # validated, JSONLogic compiled once
t = apply(flow, None, StartEvent(instance_id="i1", flow_id=flow.id, flow_version=1), now)
t.state, t.effects                                              # store the state, then do the effects
"""

from __future__ import annotations

from app.flows.clock import Clock, SystemClock, VirtualClock
from app.flows.compiler import CompiledFlow, CompiledSchedule, FlowInvalid, compile_flow, compile_schedule
from app.flows.cron import CronSpec, compile_cron
from app.flows.gate import GateEvent, GateState, apply_gate
from app.flows.instance import (
    TERMINAL,
    Event,
    InstanceState,
    SignalEvent,
    SlotGranted,
    StartEvent,
    StepResultEvent,
    TimerFiredEvent,
)
from app.flows.machine import Transition, apply
from app.flows.models import FlowDoc, ScheduleDoc
from app.flows.schedule import ScheduleEvent, ScheduleState, apply_schedule, due_fires, fire_instance_id
from app.flows.timing import TimingError

__all__ = [
    "TERMINAL",
    "Clock",
    "CompiledFlow",
    "CompiledSchedule",
    "CronSpec",
    "Event",
    "FlowDoc",
    "FlowInvalid",
    "GateEvent",
    "GateState",
    "InstanceState",
    "ScheduleDoc",
    "ScheduleEvent",
    "ScheduleState",
    "SignalEvent",
    "SlotGranted",
    "StartEvent",
    "StepResultEvent",
    "SystemClock",
    "TimerFiredEvent",
    "TimingError",
    "Transition",
    "VirtualClock",
    "apply",
    "apply_gate",
    "apply_schedule",
    "compile_cron",
    "compile_flow",
    "compile_schedule",
    "due_fires",
    "fire_instance_id",
]
