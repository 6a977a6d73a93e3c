"""A deterministic corpus of English sentences for measuring recall on real embeddings, made offline.

Each sentence is drawn from fixed word lists by a seeded generator (who did what to which thing, where and when,
and why), so the same seed gives the same sentences on every machine. The sentences are templated but their
embeddings are not random: they cluster by topic, verb and place as notes an agent keeps would, which is the case an
approximate index is built for (unit-normal random vectors are its worst case).
"""

from __future__ import annotations

import random

SUBJECTS = (
    "the customer",
    "our accountant",
    "the new intern",
    "a support engineer",
    "the delivery driver",
    "my neighbour",
    "the project manager",
    "a nurse",
    "the landlord",
    "the chef",
    "an auditor",
    "the school teacher",
    "a pilot",
    "the plumber",
    "the sales team",
    "a journalist",
    "the mayor",
    "the night guard",
    "a student",
    "the gardener",
    "the bank",
    "a farmer",
    "the lawyer",
    "the mechanic",
    "the librarian",
    "a tourist",
    "the coach",
    "the doctor",
)
VERBS = (
    "paid",
    "lost",
    "repaired",
    "cancelled",
    "ordered",
    "returned",
    "signed",
    "forgot",
    "painted",
    "inspected",
    "delivered",
    "sold",
    "borrowed",
    "booked",
    "cleaned",
    "reported",
    "measured",
    "photographed",
    "replaced",
    "found",
    "checked",
    "approved",
    "rejected",
    "moved",
    "packed",
    "translated",
    "counted",
    "tested",
)
OBJECTS = (
    "the overdue invoice",
    "a broken bicycle",
    "the quarterly report",
    "the hotel room",
    "a leaking pipe",
    "the rental contract",
    "a box of apples",
    "the server logs",
    "a train ticket",
    "the kitchen oven",
    "the old piano",
    "a parking fine",
    "the tax return",
    "a wedding cake",
    "the garden fence",
    "the lab samples",
    "a passport",
    "the delivery van",
    "the payroll",
    "a pair of boots",
    "the roof tiles",
    "the conference badge",
    "a laptop",
    "the insurance claim",
    "a bag of flour",
    "the water meter",
    "the flight plan",
    "the museum tickets",
)
PLACES = (
    "at the office",
    "in the warehouse",
    "near the station",
    "at the hospital",
    "in the village",
    "at the airport",
    "downtown",
    "in the basement",
    "at the harbour",
    "in the library",
    "at the farm",
    "on the third floor",
    "at the bakery",
    "in the garage",
    "at the town hall",
    "in the classroom",
    "at the hotel",
    "by the river",
)
TIMES = (
    "on Monday",
    "yesterday",
    "last week",
    "this morning",
    "after lunch",
    "before the holidays",
    "in March",
    "at midnight",
    "on Friday evening",
    "two days ago",
    "during the storm",
    "at dawn",
    "last summer",
    "today",
)
REASONS = (
    "because it was urgent",
    "without telling anyone",
    "after a long argument",
    "for the second time",
    "as the manager asked",
    "to save money",
    "by mistake",
    "in a hurry",
    "with great care",
    "for a friend",
    "before the deadline",
    "despite the rain",
    "to pass the inspection",
    "at a discount",
)


def sentences(count: int, seed: int) -> list[str]:
    """``count`` distinct sentences, the same for the same seed."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        words = [rng.choice(part) for part in (SUBJECTS, VERBS, OBJECTS, PLACES, TIMES, REASONS)]
        text = " ".join(words)
        text = text[0].upper() + text[1:] + "."
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out
