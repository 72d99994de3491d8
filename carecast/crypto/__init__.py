"""Keys, wrapping and the KMS access log."""
