"""A synthetic world of facts, for separating what a model stores from what it reads.

Fictional people each have a home town, a pet, a favourite food and a friend. Training documents
are short question-and-answer documents ("Q: What pet does Bako have? A: cat.") whose answer needs
one fact, or two for a multi-hop question ("Q: Where does Bako's friend live? A: Dask."). Where
the facts come from is the regime (`data.facts_in`):

- `weights`: the facts are stated in other training documents, one per person ("Bako lives in
  Brel. Bako has a cat. ..."); the question documents carry no facts, so answering means recalling.
- `context`: every question document starts with the facts it needs (plus distractor facts about
  other people, shuffled), then `CONTEXT_END`, then the question; no document states facts on its
  own. With `train.loss_on: continuation` only the part after `CONTEXT_END` is scored.

A seeded share of people is held out: they (and their friends, who are held out with them) occur
in no training or validation document, so a question about them can only be answered from its
context. The world is a pure function of `data.facts`, so the knowledge eval and the forgetting
term rebuild the same people without reading the corpus.

Every character a held-out name uses also occurs in training text (names start with the capital
of a town and are built from letters of the templates), so the character tokenizer never maps a
held-out name to <unk>.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from research.data.corpus import CONTEXT_END
from research.data.streams import DocStreams, memory_part

TOWNS = ("Brel", "Dask", "Gorm", "Kest", "Lume", "Mord", "Nask", "Pell")
PETS = ("cat", "dog", "owl", "fox", "frog", "goat", "hen", "crab")
FOODS = ("figs", "plums", "rice", "soup", "bread", "beans", "pears", "nuts")
ATTRIBUTES = {"town": TOWNS, "pet": PETS, "food": FOODS}

_INITIALS = "".join(t[0] for t in TOWNS)
_CONSONANTS = "bdgklmnprst"
_VOWELS = "aeiou"

_FACT = {
    "town": "{e} lives in {v}.",
    "pet": "{e} has a {v}.",
    "food": "{e} likes {v}.",
    "friend": "{e}'s friend is {v}.",
}
_QUESTION = {
    "town": "Where does {e} live?",
    "pet": "What pet does {e} have?",
    "food": "What does {e} like to eat?",
    "friend": "Who is {e}'s friend?",
}


@dataclass(frozen=True)
class Person:
    name: str
    town: str
    pet: str
    food: str
    friend: str


@dataclass(frozen=True)
class World:
    trained: tuple[Person, ...]
    held_out: tuple[Person, ...]

    def person(self, name: str) -> Person:
        return next(p for p in self.trained + self.held_out if p.name == name)


@dataclass(frozen=True)
class Probe:
    """One scored question: the text before the answer, and the candidate answers (index `answer`)."""

    prompt: str  # the whole document up to the answer, context included
    candidates: tuple[str, ...]  # each with its leading space, as the document continues
    answer: int
    stored: int | None = None  # counterfactual probes: the candidate the trained fact gives


def _names(n: int, rng: random.Random) -> list[str]:
    names: set[str] = set()
    out = []
    while len(out) < n:
        name = rng.choice(_INITIALS) + rng.choice(_VOWELS) + rng.choice(_CONSONANTS) + rng.choice(_VOWELS)
        if name not in names:
            names.add(name)
            out.append(name)
    return out


def _people(names: list[str], rng: random.Random) -> tuple[Person, ...]:
    friends = names[1:] + names[:1]  # a cycle over a shuffled list: nobody is their own friend
    return tuple(Person(n, rng.choice(TOWNS), rng.choice(PETS), rng.choice(FOODS), f) for n, f in zip(names, friends))


def build_world(cfg) -> World:
    """The people of `data.facts` (entities, held_out, seed): friends stay within each part."""
    rng = random.Random(cfg.seed)
    names = _names(cfg.entities + cfg.held_out, rng)
    trained, held = names[: cfg.entities], names[cfg.entities :]
    return World(_people(trained, rng), _people(held, rng))


def fact(person: Person, attr: str, value: str | None = None) -> str:
    return _FACT[attr].format(e=person.name, v=getattr(person, attr) if value is None else value)


def _question(name: str, attr: str, hop: bool) -> str:
    return _QUESTION[attr].format(e=f"{name}'s friend" if hop else name)


def all_facts(person: Person) -> str:
    return " ".join(fact(person, a) for a in ("town", "pet", "food", "friend"))


def context_for(world: World, person: Person, attr: str, hop: bool, people: tuple[Person, ...],
                rng: random.Random, distractors: int, value: str | None = None) -> str:
    """The facts a question needs, plus `distractors` facts about others, shuffled, ending in a space
    (not a newline: the weights regime never sees one, and the char tokenizer would map it to <unk>)."""
    needed = [fact(person, "friend"), fact(world.person(person.friend), attr, value)] if hop \
        else [fact(person, attr, value)]
    others = [p for p in people if p.name not in (person.name, person.friend)]
    extra = [fact(rng.choice(others), rng.choice(("town", "pet", "food"))) for _ in range(distractors)]
    lines = needed + extra
    rng.shuffle(lines)
    return " ".join(lines) + " "


def question_doc(world: World, person: Person, attr: str, hop: bool, with_context: bool,
                 people: tuple[Person, ...], rng: random.Random, distractors: int) -> str:
    target = world.person(person.friend) if hop else person
    qa = f"Q: {_question(person.name, attr, hop)} A: {getattr(target, attr)}."
    if not with_context:
        return qa
    return context_for(world, person, attr, hop, people, rng, distractors) + CONTEXT_END + qa


def documents(world: World, cfg, facts_in: str, rng: random.Random, n_questions: int) -> list[str]:
    """Training-distribution documents about the trained people (held-out ones never appear)."""
    docs = []
    if facts_in == "weights":
        docs += [all_facts(p) for p in world.trained]
    for _ in range(n_questions):
        person = rng.choice(world.trained)
        hop = rng.random() < cfg.multihop_fraction
        attr = rng.choice(("town", "pet", "food") if hop else ("town", "pet", "food", "friend"))
        docs.append(question_doc(world, person, attr, hop, facts_in == "context", world.trained, rng,
                                 cfg.distractors))
    rng.shuffle(docs)
    return docs


def facts_corpus(data_cfg) -> DocStreams:
    """The `facts` source: train and validation documents of one regime (validation asks new questions
    about the same trained people; the held-out people are for the knowledge eval only)."""
    cfg = data_cfg.facts
    world = build_world(cfg)
    n = cfg.questions_per_entity * cfg.entities
    train = documents(world, cfg, data_cfg.facts_in, random.Random(cfg.seed + 1), n)
    val = documents(world, cfg, data_cfg.facts_in, random.Random(cfg.seed + 2), max(1, n // 10))
    meta = {"source": f"facts ({data_cfg.facts_in})", "entities": cfg.entities, "held_out": cfg.held_out,
            "val_split": "new questions about the trained people"}
    return DocStreams([memory_part("facts", train)], [memory_part("facts validation", val)], meta=meta)


# -- probes for the knowledge eval and the forgetting term -------------------------------------


def _probe(world: World, person: Person, attr: str, hop: bool, context: str, value: str | None = None) -> Probe:
    target = world.person(person.friend) if hop else person
    truth = getattr(target, attr) if value is None else value
    options = ATTRIBUTES[attr]
    stored = options.index(getattr(target, attr)) if value is not None else None
    return Probe(context + f"Q: {_question(person.name, attr, hop)} A:", tuple(" " + o for o in options),
                 options.index(truth), stored)


def closed_book(world: World, people: tuple[Person, ...], hop: bool = False) -> list[Probe]:
    """Every (person, attribute) question with no context: answerable only from the weights."""
    return [_probe(world, p, a, hop, "") for p in people for a in ("town", "pet", "food")]


def open_book(world: World, people: tuple[Person, ...], cfg, seed: int, hop: bool = False) -> list[Probe]:
    """The same questions, each after a context holding the facts it needs (and distractors)."""
    rng = random.Random(seed)
    return [_probe(world, p, a, hop, context_for(world, p, a, hop, people, rng, cfg.distractors))
            for p in people for a in ("town", "pet", "food")]


def counterfactual(world: World, cfg, seed: int) -> list[Probe]:
    """Trained people, with a context that contradicts their trained fact: the answer is the context's."""
    rng = random.Random(seed)
    out = []
    for p in world.trained:
        for a in ("town", "pet", "food"):
            other = rng.choice([v for v in ATTRIBUTES[a] if v != getattr(p, a)])
            ctx = context_for(world, p, a, False, world.trained, rng, cfg.distractors, value=other)
            out.append(_probe(world, p, a, False, ctx, value=other))
    return out
