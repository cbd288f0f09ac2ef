"""A Quasar flow worker in plain confluent-kafka (no Quasar import): python worker.py HANDLER."""

import json
import os
import sys
import time

from confluent_kafka import Consumer, Producer

kafka = {"bootstrap.servers": os.environ.get("KAFKA_BOOTSTRAP", "localhost:9092")}
prefix, handler = os.environ.get("QUASAR_TOPIC_PREFIX", "quasar."), sys.argv[1]
consumer = Consumer({**kafka, "group.id": f"{prefix}workers.{handler}", "enable.auto.commit": False,
                     "auto.offset.reset": "earliest", "fetch.wait.max.ms": 50, "session.timeout.ms": 6000})
producer = Producer(kafka)
consumer.subscribe([f"{prefix}tasks.{handler}"])


def work(task):  # your code: return the output, or raise to report a failure
    time.sleep(task["input"].get("sleep", 0) if isinstance(task["input"], dict) else 0)  # "slow work"
    return {"echo": task["input"], "worker": os.getpid()}


while True:
    msg = consumer.poll(1.0)
    if msg is None or msg.error():
        continue
    task = json.loads(msg.value())
    if not task.get("deadline") or time.time() < task["deadline"]:  # past its deadline: the flow retried it
        print(f"{handler}: working on {task['task_id']}", flush=True)
        reply = {k: task[k] for k in ("task_id", "instance_id", "step", "attempt", "handler")}
        try:
            reply.update(status="completed", output=work(task))
        except Exception as exc:
            reply.update(status="failed", error={"code": type(exc).__name__, "message": str(exc)})
        producer.produce(task["reply_topic"], json.dumps(reply).encode(), task["instance_id"].encode())
        producer.flush()
    consumer.commit(msg, asynchronous=False)
