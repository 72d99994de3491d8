"""Small-cell suppression with complementary suppression, proved cell by cell.

Every published count is a sum of *atoms*: sets of members that no published count splits (in a
campaign report, the members who share variant, segment, day, delivery state, every engagement flag
and conversion). Whatever a reader knows comes from the printed counts, the relations between them
(row and column totals, ``sent = delivered + bounced``, tables sharing a total) and the markers:

* a printed number is exact;
* ``<11`` says the count is 0 to 10. It marks every count from 1 to 10 (a *primary* cell), and a
  true zero only when that zero had to be hidden as a complement;
* ``>10`` says the count is 11 or more: a larger count hidden as a complement;
* an *unprinted* count (one the report never prints but a reader can work out, such as "delivered
  but not opened" = delivered - opened) is only known to be 0 or more, and is protected like any
  other count when it is 1 to 10.

**The proof.** A hidden count is safe when another population of members, as real as the true one,
matches everything printed and every marker but differs in that count: the reader cannot tell the
two apart. For each small count the method builds such a population, a *witness*: a change of the
atom counts (atoms stay 0 or more) that leaves every printed number as it is, keeps every hidden
count within its marker's range and changes the small count. A change of atom counts moves whole
members, so every relation between published counts still holds, whichever relations there are.

A witness is grown as a hypercube: a member is added to (or taken from) one atom of the small count,
then for one attribute after another (variant, segment, day, delivery state, …) the change is
mirrored at another value of that attribute with the opposite sign, cancelling it in every total
over that attribute. A beam search picks the mirrors that leave the fewest printed counts changed;
those left are hidden as complements, cheapest first (small counts and detail cells before large
counts and totals). Markers follow from true values alone, so a witness stays valid as more cells are
hidden, and one witness covers every count it changes. At the end every witness is checked again
from scratch, against the atoms and against each relation given. When no witness can be found the
method refuses to publish (``DisclosureError``) rather than publish a recoverable count.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

SMALL_CELL = 11
SUPPRESSED = f"<{SMALL_CELL}"
"""A count from 0 to 10: every count from 1 to 10, and a zero hidden as a complement."""
COMPLEMENT = f">{SMALL_CELL - 1}"
"""A count of 11 or more, hidden so that a small count cannot be worked out by subtraction."""

_EFFORTS = ((8, 6), (64, 6), (None, 16))
"""How hard to look, in turn, until a witness is found: how many atoms of the small count to try as
the first corner (most promising first; None: all of them), and how many partial hypercubes to keep
at each step. The first effort almost always suffices; sparse tables sometimes need the others."""

K = TypeVar("K", bound=Hashable)


class DisclosureError(RuntimeError):
    """No safe way was found to publish these counts: publish nothing rather than a small count."""


@dataclass(frozen=True)
class Atom(Generic[K]):
    """Members that no published count splits; every published count is a sum of atoms.

    ``coordinates`` are the atom's attribute values, in the same order for every atom: a hypercube
    moves members between atoms that differ in one coordinate. Atoms with no members must be given
    too (a witness may add a member to them) wherever such members could exist.
    """

    coordinates: tuple[Hashable, ...]
    count: int
    cells: tuple[K, ...]


@dataclass(frozen=True)
class Relation(Generic[K]):
    """``total == sum(parts)``, a relation the reader knows holds; every witness is checked against it."""

    total: K
    parts: tuple[K, ...]


@dataclass(frozen=True)
class Protection(Generic[K]):
    """What may be printed: for each printed cell, its number or its marker."""

    shown: dict[K, str]
    hidden: frozenset[K]

    def value(self, cell: K) -> int | None:
        """The printed number, or None when the cell is hidden."""
        return None if cell in self.hidden else int(self.shown[cell])


def is_small(count: int) -> bool:
    return 0 < count < SMALL_CELL


def suppress_count(count: int) -> str:
    """A count that adds up with nothing else published: hidden only when it is 1 to 10."""
    return SUPPRESSED if is_small(count) else str(count)


def suppress_cells(cells: dict[str, int]) -> dict[str, str]:
    """Cells of one group whose total the caller prints as ``suppress_count(sum(cells))``."""
    total = _GroupTotal()
    values: dict[Hashable, int] = {**cells, total: sum(cells.values())}
    atoms = [Atom((name,), count, (name, total)) for name, count in cells.items()]
    printed_in_clear = [] if is_small(values[total]) else [total]
    protection = protect(values, atoms, [Relation(total, tuple(cells))], fixed=printed_in_clear)
    return {name: protection.shown[name] for name in cells}


class _GroupTotal:
    """The key of the total in ``suppress_cells``: distinct from any cell name."""


def protect(
    values: Mapping[K, int],
    atoms: Sequence[Atom[K]],
    relations: Sequence[Relation[K]] = (),
    *,
    unprinted: Collection[K] = (),
    fixed: Collection[K] = (),
    weights: Mapping[K, float] | None = None,
) -> Protection[K]:
    """Hide every count from 1 to 10 and enough complements that none can be worked out.

    ``unprinted`` cells are never printed but can be worked out; ``fixed`` cells are printed in the
    clear elsewhere and may not be hidden. ``weights`` make hiding some printed cells dearer (a grand
    total costs the reader more than a cell of the detail table); the default is 1.
    """
    search = _WitnessSearch(values, atoms, relations, unprinted, fixed, weights or {})
    for cell in search.small_cells():
        if not search.covered(cell):
            search.add_witness_for(cell)
    search.verify()
    hidden = frozenset(search.cells[i] for i in search.hidden if i not in search.unprinted)
    shown = {
        cell: (_marker(count) if cell in hidden else str(count))
        for cell, count in values.items()
        if search.index[cell] not in search.unprinted
    }
    return Protection(shown=shown, hidden=hidden)


def _marker(count: int) -> str:
    return SUPPRESSED if count < SMALL_CELL else COMPLEMENT


@dataclass(frozen=True)
class _Cube:
    """A partial witness: atom -> change (the hypercube's corners), the change to each cell, the
    attributes mirrored so far, and what it costs (cells it would hide, changes no marker allows)."""

    corners: dict[int, int]
    delta: dict[int, int]
    mirrored: frozenset[int]
    broken: int
    cost: float


class _WitnessSearch(Generic[K]):
    """Cells and atoms by index; the cells hidden so far, and the witnesses that prove them safe."""

    def __init__(
        self,
        values: Mapping[K, int],
        atoms: Sequence[Atom[K]],
        relations: Sequence[Relation[K]],
        unprinted: Collection[K],
        fixed: Collection[K],
        weights: Mapping[K, float],
    ):
        self.cells: list[K] = list(values)
        self.index = {cell: i for i, cell in enumerate(self.cells)}
        self.values = [values[cell] for cell in self.cells]
        self.unprinted = {self.index[cell] for cell in unprinted}
        self.fixed = {self.index[cell] for cell in fixed}
        self.weights = [weights.get(cell, 1.0) for cell in self.cells]
        self.atom_counts = [atom.count for atom in atoms]
        self.atom_cells = [[self.index[cell] for cell in atom.cells] for atom in atoms]
        self.atom_at = {atom.coordinates: a for a, atom in enumerate(atoms)}
        self.coordinates = [atom.coordinates for atom in atoms]
        self.atoms_of: list[list[int]] = [[] for _ in self.cells]
        summed = [0] * len(self.cells)
        for a, cells in enumerate(self.atom_cells):
            for i in cells:
                self.atoms_of[i].append(a)
                summed[i] += self.atom_counts[a]
        if len(self.atom_at) != len(atoms) or any(count < 0 for count in self.atom_counts):
            raise ValueError("atoms need distinct coordinates and counts of 0 or more")
        if summed != self.values:
            wrong = [self.cells[i] for i, (a, b) in enumerate(zip(summed, self.values, strict=True)) if a != b]
            raise ValueError(f"counts that are not the sum of their atoms: {wrong[:5]!r}")
        self.checks = [
            [(self.index[relation.total], 1), *((self.index[part], -1) for part in relation.parts)]
            for relation in relations
        ]
        for terms in self.checks:
            if sum(coefficient * self.values[i] for i, coefficient in terms):
                raise ValueError("the counts break one of the relations given")
        self.values_by_dimension = [
            sorted({coordinates[d] for coordinates in self.coordinates}, key=repr)
            for d in range(len(self.coordinates[0]) if self.coordinates else 0)
        ]
        self.lines: list[dict[tuple, list[int]]] = [{} for _ in self.values_by_dimension]
        """Per attribute: the atoms alike in every other attribute, by those other attributes."""
        for a, coordinates in enumerate(self.coordinates):
            for e, line in enumerate(self.lines):
                line.setdefault((*coordinates[:e], *coordinates[e + 1 :]), []).append(a)
        self.hidden = {i for i, count in enumerate(self.values) if is_small(count)} | self.unprinted
        self.witnesses: list[dict[int, int]] = []
        """Each witness as the change of member count per atom."""
        self.changed: set[int] = set()

    def small_cells(self) -> list[K]:
        """Printed small cells first (detail before totals), then the unprinted ones."""
        small = [i for i, count in enumerate(self.values) if is_small(count)]
        small.sort(key=lambda i: (i in self.unprinted, self.weights[i], self.values[i]))
        return [self.cells[i] for i in small]

    def covered(self, cell: K) -> bool:
        """Whether a witness found for another cell changes this one too (and so protects it)."""
        return self.index[cell] in self.changed

    def add_witness_for(self, cell: K) -> None:
        target = self.index[cell]
        if target in self.fixed:
            raise DisclosureError(f"{cell!r} is printed in the clear elsewhere but is a small count")
        best: _Cube | None = None
        bases = self._bases(target)
        for first_corners, beam in _EFFORTS:
            for base, sign in bases[:first_corners]:
                found = self._grow(target, base, sign, beam)
                if found is not None and (best is None or found.cost < best.cost):
                    best = found
                    if best.cost == 0:
                        break
            if best is not None:
                break
        if best is None:
            raise DisclosureError(f"no complementary suppression protects {cell!r}")
        changed = {i for i, change in best.delta.items() if change}
        self.hidden |= changed
        self.changed |= changed
        self.witnesses.append(best.corners)

    def verify(self) -> None:
        """Check every witness from scratch, and that every hidden small count is changed by one."""
        changed: set[int] = set()
        for corners in self.witnesses:
            if any(self.atom_counts[a] + change < 0 for a, change in corners.items()):
                raise DisclosureError("a witness leaves an atom with fewer than no members")
            delta = self._cell_delta(corners)
            for terms in self.checks:
                if sum(coefficient * delta.get(i, 0) for i, coefficient in terms):
                    raise DisclosureError("a witness breaks a relation: the atoms do not match the relations")
            for i, change in delta.items():
                if change and (i not in self.hidden or not self._within_marker(i, change)):
                    raise DisclosureError(f"a witness changes {self.cells[i]!r} beyond what is published")
            changed.update(i for i, change in delta.items() if change)
        exposed = [self.cells[i] for i in self.hidden if is_small(self.values[i]) and i not in changed]
        if exposed:
            raise DisclosureError(f"hidden but recoverable: {exposed!r}")

    def _bases(self, target: int) -> list[tuple[int, int]]:
        """First corners: an atom of the target gaining a member, or losing one it has."""
        options = [
            (base, sign) for base in self.atoms_of[target] for sign in (1, -1) if self.atom_counts[base] + sign >= 0
        ]
        # Atoms with members first: their neighbours tend to have members too, which a mirrored
        # corner taking a member away needs (an empty atom is often an unlikely combination, such as
        # a click without an open, whose mirrors are empty as well).
        options.sort(
            key=lambda option: (
                self.atom_counts[option[0]] == 0,
                *self._measure(self._cube({option[0]: option[1]}, {}, frozenset())),
            )
        )
        return options

    def _grow(self, target: int, base: int, sign: int, width: int) -> _Cube | None:
        """Beam search over mirrored attributes; the cheapest cube that breaks no marker wins. It stops
        when a step improves on nothing the step before had."""
        start = self._cube({base: sign}, {}, frozenset())
        best = start if self._acceptable(start, target) else None
        beam = [start]
        while beam and (best is None or best.cost > 0):
            grown = [bigger for cube in beam for bigger in self._mirrors(cube, base) if bigger.delta.get(target)]
            grown.sort(key=self._measure)
            if not grown or self._measure(grown[0]) >= self._measure(beam[0]) and best is not None:
                break
            beam = grown[:width]
            for cube in beam:
                if self._acceptable(cube, target) and (best is None or cube.cost < best.cost):
                    best = cube
        return best

    def _mirrors(self, cube: _Cube, base: int) -> list[_Cube]:
        """The cube mirrored along one more attribute, at each other value it can take."""
        found = []
        for d, values in enumerate(self.values_by_dimension):
            if d in cube.mirrored:
                continue
            for value in values:
                if value == self.coordinates[base][d]:
                    continue
                mirrored: dict[int, int] = {}
                for a, change in cube.corners.items():
                    moved = self._mirror_of(a, d, value, -change, cube, mirrored)
                    if moved is None:
                        break
                    mirrored[moved] = -change
                else:
                    delta = dict(cube.delta)
                    for i, change in self._cell_delta(mirrored).items():
                        delta[i] = delta.get(i, 0) + change
                    found.append(self._cube({**cube.corners, **mirrored}, delta, cube.mirrored | {d}))
        return found

    def _mirror_of(
        self, a: int, d: int, value: Hashable, change: int, cube: _Cube, taken: dict[int, int]
    ) -> int | None:
        """The atom like ``a`` but with ``value`` in attribute ``d``. When the change takes a member from
        it and it has none, the fullest atom that also differs in one attribute not yet mirrored (the
        member leaves from another day, say): sparse data would otherwise leave no hypercube at all."""
        coordinates = (*self.coordinates[a][:d], value, *self.coordinates[a][d + 1 :])

        def free(other: int) -> bool:
            return other not in cube.corners and other not in taken and self.atom_counts[other] + change >= 0

        exact = self.atom_at.get(coordinates)
        if exact is not None and free(exact):
            return exact
        if change > 0:
            return None
        nearby = [
            other
            for e in range(len(coordinates))
            if e != d and e not in cube.mirrored
            for other in self.lines[e].get((*coordinates[:e], *coordinates[e + 1 :]), ())
            if free(other)
        ]
        return max(nearby, key=self.atom_counts.__getitem__, default=None)

    def _cube(self, corners: dict[int, int], delta: dict[int, int], mirrored: frozenset[int]) -> _Cube:
        delta = delta or self._cell_delta(corners)
        broken, cost = 0, 0.0
        for i, change in delta.items():
            if not change:
                continue
            if i in self.fixed or not self._within_marker(i, change):
                broken += 1
            elif i not in self.hidden:
                cost += self.weights[i] * (1.0 + math.log2(1 + self.values[i]))
        return _Cube(corners, delta, mirrored, broken, cost)

    @staticmethod
    def _measure(cube: _Cube) -> tuple[int, float]:
        return cube.broken, cube.cost

    @staticmethod
    def _acceptable(cube: _Cube, target: int) -> bool:
        return cube.broken == 0 and bool(cube.delta.get(target))

    def _cell_delta(self, corners: Mapping[int, int]) -> dict[int, int]:
        delta: dict[int, int] = {}
        for a, change in corners.items():
            for i in self.atom_cells[a]:
                delta[i] = delta.get(i, 0) + change
        return delta

    def _within_marker(self, i: int, change: int) -> bool:
        """Would ``values[i] + change`` still fit what the reader is told about cell i once hidden?"""
        changed = self.values[i] + change
        if i in self.unprinted:
            return changed >= 0
        if self.values[i] < SMALL_CELL:
            return 0 <= changed < SMALL_CELL
        return changed >= SMALL_CELL
