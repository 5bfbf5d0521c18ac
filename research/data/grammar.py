"""The built-in corpus: children's stories from a seeded probabilistic grammar, with a known floor.

Why a grammar: a demo or a test needs data with no download, and a corpus whose true entropy is
known tells how far a model is from perfect. The grammar is a probabilistic context-free grammar
plus *bindings*: a story draws its hero, friend, place and toy once (uniformly), writes them out in
sentences that every story has (hero and toy in INTRO, friend and place in TRIP), and refers back
to them later (a reference adds no entropy).

The grammar is LL(1) with no empty rules: the alternatives of every rule begin with different
words, and every binding is written out in full where it is introduced. So each story has exactly
one derivation, the story's probability is the product of its choices, and

    H(story) = sum over bindings of log(n_values) + H(STORY),
    H(A) = sum_alt p_alt * (-log p_alt + sum of H(item) over the alternative's items),

computed exactly by `entropy_nats()`. The end of a story is also determined by the grammar (the
language is prefix-free), so a perfect model pays nothing for the end-of-text token: the floor for
a model's validation loss is H per story, and in bits per byte (counting one separator byte per
story, as the harness does) `floor_bits_per_byte()`. `check_ll1()` proves the unambiguity claim
for the grammar as written; the tests run it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import cache

# Each rule: list of (weight, alternative). An alternative is space-separated items: a word or
# punctuation token, <RULE>, or {binding.field}. “ and ” are opening/closing quotes (rendered ").
GRAMMAR: dict[str, list[tuple[float, str]]] = {
    "STORY": [(1, "<OPEN> <INTRO> <LIKE> <TRIP> <PROBLEM> <SOLUTION> <ENDING>")],
    "OPEN": [(3, "Once upon a time ,"), (1, "Long ago ,"), (1, "In a small town ,")],
    "INTRO": [(1, "there was a <ADJ> {hero.kind} named {hero.name} . {hero.Pron} had a {toy} .")],
    "ADJ": [(2, "little"), (1, "happy"), (1, "brave"), (1, "kind"), (1, "shy"), (1, "curious")],
    "LIKE": [
        (2, "{hero.Pron} loved to <ACTIVITY> ."),
        (1, "Every day , {hero.pron} liked to <ACTIVITY> ."),
        (1, "{hero.name} loved {hero.pos} {toy} very much ."),
    ],
    "ACTIVITY": [
        (2, "play with {hero.pos} {toy}"),
        (1, "sing songs"),
        (1, "draw pictures of <DRAWN>"),
        (1, "run and jump"),
        (1, "read books about <DRAWN>"),
    ],
    "DRAWN": [(1, "the sun"), (1, "big trees"), (1, "funny animals"), (1, "boats")],
    "TRIP": [
        (2, "One <TIME> , {hero.name} went to the {place} with {hero.pos} friend , {friend.name} the {friend.kind} ."),
        (1, "On a <WEATHER> day , {hero.name} and {friend.name} the {friend.kind} walked to the {place} ."),
    ],
    "TIME": [(1, "day"), (1, "morning"), (1, "afternoon")],
    "WEATHER": [(2, "sunny"), (1, "windy"), (1, "cold")],
    "PROBLEM": [
        (2, "Suddenly , <SUDDEN>"),
        (2, "But then , {hero.name} could not find {hero.pos} {toy} . <SAD>"),
        (1, "There , they saw a big <BIG> . {friend.name} was scared ."),
        (1, "{friend.name} was sad because {friend.pron} was hungry ."),
    ],
    "SUDDEN": [
        (1, "it started to rain . They got very wet ."),
        (1, "a strong wind took {hero.pos} hat up into a tree ."),
        (1, "{friend.name} fell into a hole and could not get out ."),
    ],
    "SAD": [(1, "{hero.Pron} <SADNESS> .")],
    "SADNESS": [(1, "began to cry"), (1, "felt very sad")],
    "BIG": [(1, "dog"), (1, "spider"), (1, "bear"), (1, "shadow")],
    "SOLUTION": [
        (2, "{hero.name} had an idea . <IDEA>"),
        (1, "They looked everywhere together , and at last they found a way ."),
        (1, "A kind old <HELPER> came and helped them ."),
        (1, "{hero.Pron} said , “ <SAYING> ” <SAYAFTER>"),
    ],
    "IDEA": [(1, "{hero.Pron} <PLAN> .")],
    "PLAN": [
        (1, "asked {hero.pos} mom for help"),
        (1, "shared {hero.pos} snack with {friend.name}"),
        (1, "found a long stick and used it"),
    ],
    "HELPER": [(1, "man"), (1, "woman"), (1, "owl")],
    "SAYING": [(1, "Do not worry , I will help you !"), (1, "We can do it if we try !"), (1, "Let us be brave !")],
    "SAYAFTER": [(1, "And {hero.pron} did ."), (1, "Then {hero.pron} smiled .")],
    "ENDING": [
        (2, "In the end , they were <FEELING> . <MORAL>"),
        (1, "After that , they went home and had <TREAT> . <MORAL>"),
    ],
    "FEELING": [(2, "very happy"), (1, "tired but happy"), (1, "proud")],
    "TREAT": [(1, "warm soup"), (1, "cookies"), (1, "cake")],
    "MORAL": [
        (2, "{hero.name} learned that <LESSON> ."),
        (1, "From that day on , {hero.name} and {friend.name} were best friends ."),
        (1, "The end ."),
    ],
    "LESSON": [(1, "friends help each other"), (1, "being brave is good"), (1, "sharing makes everyone happy")],
}

_HEROES = [("girl", n, "she", "her") for n in ("Lily", "Mia", "Sara", "Anna", "Zoe", "Emma", "Lucy", "Ella")]
_HEROES += [("boy", n, "he", "his") for n in ("Tom", "Ben", "Max", "Sam", "Leo", "Jack", "Tim", "Finn")]
BINDINGS: dict[str, list[dict[str, str]]] = {
    "hero": [{"kind": k, "name": n, "pron": p, "Pron": p.capitalize(), "pos": s} for k, n, p, s in _HEROES],
    "friend": [
        {"name": name, "kind": kind, "pron": "it"}
        for name, kind in [("Pip", "bird"), ("Rex", "dog"), ("Mimi", "cat"), ("Hop", "frog"),
                           ("Bun", "bunny"), ("Dot", "duck"), ("Sunny", "fox"), ("Gus", "bear")]
    ],
    "place": [{"": p} for p in ("park", "beach", "forest", "farm", "lake", "garden", "hill", "zoo")],
    "toy": [{"": t} for t in ("ball", "kite", "doll", "truck", "teddy bear", "red car", "drum", "book")],
}
OPEN_QUOTE, CLOSE_QUOTE = "“", "”"
PUNCT = {",", ".", "!", "?", CLOSE_QUOTE}


def _items(alt: str) -> list[str]:
    return alt.split()


def _binding(item: str) -> tuple[str, str] | None:
    if item.startswith("{") and item.endswith("}"):
        name, _, fld = item[1:-1].partition(".")
        return name, fld
    return None


def _rule(item: str) -> str | None:
    return item[1:-1] if item.startswith("<") and item.endswith(">") else None


def _binding_tokens(name: str, fld: str, value: dict[str, str]) -> list[str]:
    return value[fld].split()


def render(tokens: list[str]) -> str:
    """Join tokens: no space before punctuation, none after an opening quote; quotes become "."""
    out: list[str] = []
    for i, tok in enumerate(tokens):
        glue = i == 0 or tok in PUNCT or tokens[i - 1] == OPEN_QUOTE
        if not glue:
            out.append(" ")
        out.append('"' if tok in (OPEN_QUOTE, CLOSE_QUOTE) else tok)
    return "".join(out)


@dataclass
class Story:
    text: str
    logprob: float  # natural log of the story's probability under the grammar
    tokens: list[str]


def sample_story(rng: random.Random) -> Story:
    values = {name: rng.randrange(len(vals)) for name, vals in BINDINGS.items()}
    logp = -sum(math.log(len(vals)) for vals in BINDINGS.values())
    tokens: list[str] = []

    def expand(rule: str) -> None:
        nonlocal logp
        alts = GRAMMAR[rule]
        total = sum(w for w, _ in alts)
        r = rng.random() * total
        for w, alt in alts:
            r -= w
            if r < 0:
                break
        logp += math.log(w / total)
        for item in _items(alt):
            if (sub := _rule(item)) is not None:
                expand(sub)
            elif (b := _binding(item)) is not None:
                tokens.extend(_binding_tokens(b[0], b[1], BINDINGS[b[0]][values[b[0]]]))
            else:
                tokens.append(item)

    expand("STORY")
    return Story(render(tokens), logp, tokens)


def generate_stories(n: int, seed: int = 0) -> list[Story]:
    rng = random.Random(seed)
    return [sample_story(rng) for _ in range(n)]


# -- exact quantities -------------------------------------------------------------------------


def _probs(rule: str) -> list[tuple[float, list[str]]]:
    alts = GRAMMAR[rule]
    total = sum(w for w, _ in alts)
    return [(w / total, _items(a)) for w, a in alts]


def _token_bytes(tok: str) -> int:
    """UTF-8 bytes a token adds to the rendered story, including its leading space."""
    if tok == OPEN_QUOTE:
        return 1 + 1 - 1  # space before, the quote, and the next word's space is dropped
    return len(('"' if tok == CLOSE_QUOTE else tok).encode("utf-8")) + (0 if tok in PUNCT else 1)


def _item_bytes(item: str) -> float:
    if (sub := _rule(item)) is not None:
        return _expected_bytes(sub)
    if (b := _binding(item)) is not None:
        vals = BINDINGS[b[0]]
        return sum(sum(_token_bytes(t) for t in _binding_tokens(b[0], b[1], v)) for v in vals) / len(vals)
    return _token_bytes(item)


@cache
def _expected_bytes(rule: str) -> float:
    return sum(p * sum(_item_bytes(i) for i in items) for p, items in _probs(rule))


@cache
def _entropy(rule: str) -> float:
    h = 0.0
    for p, items in _probs(rule):
        h += -p * math.log(p) + p * sum(_entropy(s) for i in items if (s := _rule(i)) is not None)
    return h


def entropy_nats() -> float:
    """Exact entropy of a story (nats), the floor of a model's loss summed over one story."""
    return sum(math.log(len(v)) for v in BINDINGS.values()) + _entropy("STORY")


def expected_bytes() -> float:
    """Expected UTF-8 length of a rendered story (the first word has no leading space)."""
    return _expected_bytes("STORY") - 1


def floor_bits_per_byte() -> float:
    """Entropy in bits per byte, with one separator byte per story as the harness counts bytes."""
    return entropy_nats() / math.log(2) / (expected_bytes() + 1)


# -- the unambiguity proof --------------------------------------------------------------------


def _first(item: str) -> set[str]:
    if (sub := _rule(item)) is not None:
        return set().union(*(_first(items[0]) for _, items in _probs(sub)))
    if (b := _binding(item)) is not None:
        return {_binding_tokens(b[0], b[1], v)[0] for v in BINDINGS[b[0]]}
    return {item}


def check_ll1() -> list[str]:
    """Problems that would make the grammar ambiguous; an empty list means none.

    Checks: the alternatives of each rule start with disjoint sets of words; no rule is empty or
    recursive (so the language is finite); an opening quote is followed by a word; every binding
    can be read back where it is first written (its values differ in their written fields).
    """
    problems = []
    for rule, alts in GRAMMAR.items():
        seen: dict[str, int] = {}
        for k, (_, alt) in enumerate(alts):
            items = _items(alt)
            if not items:
                problems.append(f"{rule}: empty alternative")
                continue
            for tok in _first(items[0]):
                if tok in seen:
                    problems.append(f"{rule}: alternatives {seen[tok]} and {k} both start with {tok!r}")
                seen[tok] = k
            for a, b in zip(items, items[1:]):
                if a == OPEN_QUOTE and (b in PUNCT or b == OPEN_QUOTE):
                    problems.append(f"{rule}: an opening quote must be followed by a word")

    def visit(rule: str, stack: tuple[str, ...]) -> None:
        if rule in stack:
            problems.append(f"recursive rule: {' -> '.join(stack + (rule,))}")
            return
        for _, items in _probs(rule):
            for i in items:
                if (sub := _rule(i)) is not None:
                    visit(sub, stack + (rule,))

    visit("STORY", ())
    for name, vals in BINDINGS.items():
        fields = vals[0].keys()
        written = [" ".join(v[f] for f in fields if f not in ("pron", "Pron", "pos")).split() for v in vals]
        for a in written:
            for b in written:
                if a is not b and b[: len(a)] == a:
                    problems.append(f"binding {name}: {' '.join(a)!r} is a prefix of {' '.join(b)!r}")
    return problems
