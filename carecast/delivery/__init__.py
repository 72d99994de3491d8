"""Delivery: outbox rows to signed messages on the wire, with the send ledger's guarantees."""

from carecast.delivery.engine import DeliveryCounts, DeliveryPlan, deliver_table
from carecast.delivery.run import deliver_campaign, open_target
from carecast.delivery.transports import Transport, TransportSpec

__all__ = [
    "DeliveryCounts",
    "DeliveryPlan",
    "Transport",
    "TransportSpec",
    "deliver_campaign",
    "deliver_table",
    "open_target",
]
