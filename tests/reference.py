"""Independent reference implementations the tests compare carecast against."""

from email_validator import EmailNotValidError, validate_email


def is_valid_email(address: str) -> bool:
    """email-validator's syntax check; reserved test domains (``.test``) allowed, no DNS."""
    try:
        validate_email(address, check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        return False
    return True


def assign_variant(campaign, patient_key: str) -> str:
    """The variant rule written one patient at a time, as it first shipped: the vectorized
    ``carecast.audience.assign_variants`` must agree with it, so no patient changes arm."""
    import hashlib

    def unit_interval(*parts: str) -> float:
        digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    if unit_interval(campaign.name, "holdout", patient_key) < campaign.holdout:
        return "holdout"
    draw = unit_interval(campaign.name, "variant", patient_key)
    cumulative = 0.0
    for variant, weight in campaign.variants.items():
        cumulative += weight
        if draw < cumulative:
            return variant
    return next(reversed(campaign.variants))
