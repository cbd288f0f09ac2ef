"""Durable flows on Kafka: the partition-owning runner, the instance view and the client the gateway uses.

The pure core (`app.flows`) decides; this package moves records. See docs/flows.md.
"""
