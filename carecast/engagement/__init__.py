"""Engagement: the endpoint (``carecast serve``), provider feedback (SES events, DSNs, ARF) and their event store."""
