"""Independent reference implementations the tests compare carecast against."""

from email_validator import EmailNotValidError, validate_email


def is_valid_email(address: str) -> bool:
    """email-validator's syntax check; reserved test domains (``.test``) allowed, no DNS."""
    try:
        validate_email(address, check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        return False
    return True
