"""Reading landed extracts, validating them column-wise, and splitting loaded from quarantined rows."""
