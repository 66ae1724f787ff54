"""Synthetic contributor rosters with known truth: the demo's raw deliveries and the linkage benchmark.

Each contributor knows a child by its own local ID and writes the name, date of birth and gender down
its own way. The noise is the kind linkage meets in administrative rosters: typing errors, nicknames,
day and month swapped, gender left blank, and the same child entered twice under two local IDs. The
true child of every row is returned beside the rows (for measuring linkage), never inside a delivery.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import random
import string
from collections.abc import Iterable
from dataclasses import dataclass

from enclave.intake.delivery import ROSTER, DeliveryFile
from enclave.intake.names import FEMALE, MALE, SURNAMES

ROSTER_COLUMNS = ("local_id", "last_name", "first_name", "birth_date", "gender")
# the share of children each demo contributor knows: about 60% are known to two or more
MEMBERSHIP = {"school_district": 0.85, "after_school": 0.30, "clinic": 0.55}


@dataclass(frozen=True)
class Noise:
    """Per-row rates of each kind of error (each drawn independently)."""

    nickname: float = 0.06
    first_typo: float = 0.04
    last_typo: float = 0.04
    swapped_date: float = 0.03
    date_typo: float = 0.015
    missing_gender: float = 0.08
    duplicate: float = 0.015


@dataclass(frozen=True)
class Person:
    """A true child: what every contributor would write if nobody made a mistake."""

    index: int
    first_name: str
    last_name: str
    birth_date: dt.date
    gender: str


@dataclass(frozen=True)
class RosterRow:
    contributor: str
    local_id: str
    last_name: str
    first_name: str
    birth_date: dt.date
    gender: str | None
    person: int  # the truth: which Person this row is (kept apart from deliveries)


# The long tail: real rosters hold thousands of rarer names beside the common ones. Without it a large
# synthetic population has far more namesakes born days apart than a real one, and linkage looks
# harder than it is.
_GIVEN_TAIL = tuple(a + b for a in ("Ka", "Ja", "Bra", "Ma", "Ry", "Ay", "Ze", "Li", "No", "Ro", "Ta", "Sa", "El",
                                     "Ar", "Da", "Ky", "Le", "Mi", "Na", "Ca", "Jo", "Ad", "Ev", "Te")
                    for b in ("den", "lyn", "ley", "son", "ra", "na", "ris", "lee", "ton", "ya", "vin", "lani",
                              "ric", "mari", "nelle", "rius"))
_SURNAME_TAIL = tuple(a + m + b for a in ("Al", "Bar", "Cal", "Dor", "El", "Fen", "Gar", "Hal", "Ken", "Lor", "Mar",
                                          "Nor", "Os", "Pen", "Quin", "Ros", "Sal", "Tor", "Ul", "Van", "Wes", "Yor",
                                          "Zan", "Bel", "Cor", "Dun")
                      for m in ("", "a", "e", "i", "o", "ar", "en", "is")
                      for b in ("ley", "ton", "son", "man", "wood", "field", "berg", "stein", "ez", "ini", "ova",
                                "sky", "dale", "ford", "well", "worth", "mond", "burn", "hart", "ridge"))


def _popularity(head: list[str], tail: tuple[str, ...], tail_share: float) -> tuple[list[str], list[float]]:
    """Names and cumulative weights: the head by a Zipf-like popularity, the tail evenly, with `tail_share`."""
    weights = [1.0 / (rank + 8) for rank in range(len(head))]
    scale = sum(weights) * tail_share / (1 - tail_share) / len(tail)
    return [*head, *tail], list(itertools.accumulate([*weights, *[scale] * len(tail)]))


def people(seed: int, births: Iterable[tuple[int, int, str]]) -> list[Person]:
    """True identities for (index, birth_year, gender) triples: names by popularity, with a long tail."""
    rng = random.Random(f"people:{seed}")
    pools = {"F": _popularity(list(FEMALE), _GIVEN_TAIL, 0.25), "M": _popularity(list(MALE), _GIVEN_TAIL, 0.25)}
    surnames, surname_weights = _popularity(list(SURNAMES), _SURNAME_TAIL, 0.35)
    found = []
    for index, year, gender in births:
        names, weights = pools.get(gender) or pools[rng.choice("FM")]
        first = rng.choices(names, cum_weights=weights)[0]
        last = rng.choices(surnames, cum_weights=surname_weights)[0]
        born = dt.date(year, 1, 1) + dt.timedelta(days=rng.randrange(365))
        found.append(Person(index, first, last, born, gender))
    return found


def _typo(rng: random.Random, word: str) -> str:
    if len(word) < 3:
        return word
    at = rng.randrange(1, len(word))
    kind = rng.randrange(4)
    if kind == 0:  # substitution
        return word[:at] + rng.choice(string.ascii_lowercase) + word[at + 1:]
    if kind == 1:  # deletion
        return word[:at] + word[at + 1:]
    if kind == 2 and at < len(word) - 1:  # transposition
        return word[:at] + word[at + 1] + word[at] + word[at + 2:]
    return word[:at] + word[at] + word[at:]  # doubled letter


def _nickname(rng: random.Random, first: str) -> str:
    nicknames = FEMALE.get(first) or MALE.get(first) or ()
    return rng.choice(nicknames) if nicknames else first


def _written(rng: random.Random, person: Person, noise: Noise) -> tuple[str, str, dt.date, str | None]:
    """One contributor's rendering of a person, with independent errors."""
    first = _nickname(rng, person.first_name) if rng.random() < noise.nickname else person.first_name
    if rng.random() < noise.first_typo:
        first = _typo(rng, first)
    last = _typo(rng, person.last_name) if rng.random() < noise.last_typo else person.last_name
    born = person.birth_date
    if rng.random() < noise.swapped_date and born.day <= 12 and born.day != born.month:
        born = dt.date(born.year, born.day, born.month)
    elif rng.random() < noise.date_typo:  # one day out, or one digit of the day mistyped
        shifted = born + dt.timedelta(days=rng.choice((-1, 1)))
        if rng.random() < 0.5:
            shifted = born.replace(day=max(1, min(28, born.day // 10 * 10 + rng.randrange(10))))
        born = shifted if shifted.year == born.year else born
    gender = None if rng.random() < noise.missing_gender else person.gender
    return first, last, born, gender


def rosters(seed: int, persons: list[Person], membership: dict[str, set[int]],
            noise: Noise = Noise()) -> list[RosterRow]:
    """Each contributor's roster of its members (person indexes), with noise, duplicates and local IDs."""
    rng = random.Random(f"rosters:{seed}")
    by_index = {p.index: p for p in persons}
    rows = []
    for contributor, members in membership.items():
        prefix = contributor[:1].upper()
        ordered = sorted(members)
        entries = [(i, False) for i in ordered] + [(i, True) for i in ordered if rng.random() < noise.duplicate]
        numbers = rng.sample(range(1_000_000, 10_000_000), len(entries))
        for (index, _), number in zip(entries, numbers, strict=True):
            first, last, born, gender = _written(rng, by_index[index], noise)
            rows.append(RosterRow(contributor, f"{prefix}{number}", last, first, born, gender, index))
    return rows


def synthetic(children: int, seed: int, noise: Noise = Noise()) -> list[RosterRow]:
    """Rosters of `children` children across the demo's three contributors, without their records."""
    rng = random.Random(f"synthetic:{seed}")
    births = [(i, 2005 + rng.randrange(16), "X" if rng.random() < 0.02 else rng.choice("FM")) for i in range(children)]
    membership = {c: {i for i in range(children) if rng.random() < share} for c, share in MEMBERSHIP.items()}
    return rosters(seed, people(seed, births), membership, noise)


def csv_bytes(header: Iterable[str], rows: Iterable[Iterable[object]]) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(list(header))
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return out.getvalue().encode()


def roster_file(contributor: str, rows: list[RosterRow], extra: dict[str, list[object]] | None = None) -> DeliveryFile:
    """One contributor's roster as the CSV it would deliver (`extra`: attribute columns, row-aligned)."""
    mine = [r for r in rows if r.contributor == contributor]
    extra = extra or {}
    body = ([r.local_id, r.last_name, r.first_name, r.birth_date.isoformat(), r.gender,
             *(values[i] for values in extra.values())] for i, r in enumerate(mine))
    return DeliveryFile(ROSTER, f"{contributor}-roster.csv", csv_bytes([*ROSTER_COLUMNS, *extra], body))
