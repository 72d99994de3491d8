"""``python -m bench --patients N``: carecast's stages against a naive pandas/smtplib script, same data, same run.

Every measured piece runs in its own freshly spawned interpreter, so its peak memory is its own.
Output is counts and timings only, never values.
"""
