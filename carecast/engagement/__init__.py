"""The engagement endpoint (``carecast serve``): one-click unsubscribe pages and their event store."""
