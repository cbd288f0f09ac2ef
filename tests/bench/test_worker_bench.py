"""The worker benchmark's steady-state window: warm-up and tail do not decide the rate."""

from __future__ import annotations

import pytest

from bench.worker import spread_over, steady_seconds


def test_even_stream_rate_is_its_own_rate() -> None:
    stamps = list(range(0, 10_000, 2))  # 5,000 records over 10 s: 500 per second
    assert 5_000 / steady_seconds(stamps) == pytest.approx(500, rel=0.01)


def test_a_slow_start_and_a_late_straggler_are_outside_the_window() -> None:
    warm_up = [0] * 5  # a few records, then a 3 s group join
    steady = list(range(3_000, 4_000))  # 1,000 records in 1 s
    straggler = [60_000]  # one record delivered a minute later
    stamps = warm_up + steady + straggler
    rate = len(stamps) / steady_seconds(stamps)
    assert rate == pytest.approx(1_000, rel=0.05)
    # the naive first-to-last rate would be 60x lower
    assert len(stamps) / ((stamps[-1] - stamps[0]) / 1000) < rate / 50


def test_identical_stamps_do_not_divide_by_zero() -> None:
    assert steady_seconds([7] * 100) > 0


def test_cpu_is_charged_to_the_steady_window_by_interpolation() -> None:
    from bench.worker import CpuSampler

    sampler = CpuSampler(0)
    sampler.samples = [(10.0, 1.0), (11.0, 1.5), (12.0, 3.5)]  # (wall time, CPU seconds)
    assert sampler.cpu_between(10.5, 11.5) == pytest.approx(2.5 - 1.25)  # 1.25 at 10.5, 2.5 at 11.5
    assert sampler.cpu_between(9.0, 11.0) is None  # before the first sample: not measured, not guessed


def test_the_sampler_sees_this_process_spend_cpu() -> None:
    import os
    import time

    from bench.worker import CpuSampler

    sampler = CpuSampler(os.getpid())
    sampler.start()
    give_up = time.monotonic() + 30
    while not sampler.samples and time.monotonic() < give_up:  # the window starts after a first sample
        time.sleep(0.005)
    start = time.time()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # busy: the sampler must charge it
        pass
    end = time.time()
    while sampler.samples[-1][0] < end and time.monotonic() < give_up:  # and ends before a last one
        time.sleep(0.005)
    sampler.stop()
    spent = sampler.cpu_between(start, end)
    assert spent is not None and spent > 0.1


def test_partitions_are_spread_once_each_process_owns_a_disjoint_share() -> None:
    def line(pid: int, text: str) -> str:  # as the worker logs it, JSON-formatted
        return f'{{"event": "partitions assigned (pid {pid}): {text}", "logger": "quasar.worker"}}\n'

    first = line(7, "b.orders[0,1,2,3]")  # the first member alone: everything
    assert not spread_over([first], "b.orders", 4, 2)
    rebalanced = [first, line(7, "b.orders[0,2]"), line(8, "b.orders[1,3] b.other[0]")]
    assert spread_over(rebalanced, "b.orders", 4, 2)
    assert not spread_over(rebalanced[:2], "b.orders", 4, 2)  # the second member has nothing yet
    overlapping = [line(7, "b.orders[0,1,2]"), line(8, "b.orders[2,3]")]
    assert not spread_over(overlapping, "b.orders", 4, 2)
    assert spread_over(["partitions assigned (pid 3): b.orders[0,1,2,3]\n"], "b.orders", 4, 1)
    assert not spread_over([line(7, "none"), line(8, "b.orders[0,1,2,3]")], "b.orders", 4, 2)


def test_the_bench_reads_the_assignment_lines_the_worker_writes() -> None:
    from confluent_kafka import TopicPartition

    from app.worker.consumption import describe_partitions

    mine = describe_partitions(
        [TopicPartition("b.orders", 2), TopicPartition("b.other", 1), TopicPartition("b.orders", 0)]
    )
    assert mine == "b.orders[0,2] b.other[1]"
    theirs = describe_partitions([TopicPartition("b.orders", 3), TopicPartition("b.orders", 1)])
    lines = [f"partitions assigned (pid 1): {mine}", f"partitions assigned (pid 2): {theirs}"]
    assert spread_over(lines, "b.orders", 4, 2)
