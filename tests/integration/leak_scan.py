"""Scan every file under given folders for PHI canaries, in plain text and common encodings.

Aho-Corasick (pyahocorasick) finds thousands of canaries in one pass per file; bytes are mapped
to text through latin-1, which is one character per byte, so any byte sequence matches exactly.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from pathlib import Path

import ahocorasick

MIN_LENGTH = 6


def _encodings(canary: str) -> set[bytes]:
    raw = canary.encode()
    variants = {raw, canary.lower().encode(), canary.upper().encode()}
    for shift in range(3):  # base64 of the canary at each alignment inside a longer encoded string
        encoded = base64.b64encode(b"\0" * shift + raw)[4 if shift else 0 :]
        variants.add(encoded[: len(encoded) - 4])
    variants.add(raw.replace(b"@", b"=40"))  # quoted-printable of an address
    return {v for v in variants if len(v) >= MIN_LENGTH}


def scan_for_canaries(folders: Iterable[Path], canaries: Iterable[str]) -> list[tuple[str, str]]:
    """Return (file, canary) for the first hit in every file that has one; an empty list is the pass."""
    automaton = ahocorasick.Automaton()
    for canary in canaries:
        if len(canary) < MIN_LENGTH:
            continue
        for needle in _encodings(canary):
            automaton.add_word(needle.decode("latin-1"), canary)
    if len(automaton) == 0:
        return []
    automaton.make_automaton()
    hits = []
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            text = path.read_bytes().decode("latin-1")
            for _end, canary in automaton.iter(text):
                hits.append((str(path), canary))
                break
    return hits
