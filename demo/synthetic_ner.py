"""Write a synthetic English named-entity corpus, a stand-in for a real one that cannot be shipped.

Names are made of invented syllables; about half of those in dev and test never appear in train, and a
model must read them from their context and their letters. Any name can be a person, a place or an
organisation: only the words around it tell which. Entities run from one to three tokens. The files
follow build_vocab.py's CoNLL layout, IOB2 tags: data_dir/{train,dev,test}.txt."""

import random
from pathlib import Path

from model.utils.files import write_text_atomic

SYLLABLES = "ka lo mi ra ten vor bel sun dar ish pol ne fa gri mut os lan che wi zor".split()
# The words around an entity, by its type; {} is the entity. Most contexts tell the type; the last
# ones of each list are shared by two types, so that even a perfect reader errs sometimes.
CONTEXTS = {
    "PER": [
        "Mr. {} said on {day} that talks had ended .",
        "coach {} praised the team .",
        "the minister , {} , resigned on {day} .",
        "{} told reporters the plan was fair .",
    ],
    "LOC": [
        "heavy rain fell in {} on {day} .",
        "the delegation flew to {} .",
        "police in {} closed the road .",
        "{} said on {day} it would build a port .",
    ],
    "ORG": [
        "shares of {} rose 4 percent .",
        "a spokesman for {} declined to comment .",
        "the union sued {} on {day} .",
        "{} told reporters the plan was fair .",
    ],
}
FILLERS = ["The talks resume on {day} .", "Prices were mixed in early trade .", "It was not clear why ."]
DAYS = "Monday Tuesday Wednesday Thursday Friday".split()


def name(rng):
    return "".join(rng.sample(SYLLABLES, rng.randint(2, 3))).capitalize()


def sentence(rng, names):
    """(tokens, IOB2 tags): one or two entities in their contexts, or a sentence without any."""
    if rng.random() < 0.15:
        tokens = rng.choice(FILLERS).format(day=rng.choice(DAYS)).split()
        return tokens, ["O"] * len(tokens)
    tokens, tags = [], []
    for number in range(rng.choice((1, 1, 2))):
        kind = rng.choice(sorted(CONTEXTS))
        entity = [rng.choice(names) for _ in range(rng.choice((1, 2, 2, 3)))]
        before, after = rng.choice(CONTEXTS[kind]).format("{}", day=rng.choice(DAYS)).split("{}")
        for words, entity_kind in (
            (["and"] * number, None),
            (before.split(), None),
            (entity, kind),
            (after.split(), None),
        ):
            tokens += words
            tags += ["O"] * len(words) if entity_kind is None else [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
    if rng.random() < 0.1:  # written in lower case, as on social media: the letters tell less
        tokens = [token.lower() for token in tokens]
    return [tokens[0].capitalize(), *tokens[1:]], tags  # a capital opens every sentence, entity or not


def generate_ner(data_dir, num_sentences, seed=230):
    """Writes about num_sentences sentences, 70% train, 15% dev and 15% test; returns the counts."""
    rng = random.Random(seed)
    pool = sorted({name(rng) for _ in range(3000)})
    rng.shuffle(pool)
    seen = pool[: len(pool) // 2]  # dev and test draw from all the names: about half never appear in train
    counts = {}
    for split, share, names in (("train", 0.7, seen), ("dev", 0.15, pool), ("test", 0.15, pool)):
        sentences = [sentence(rng, names) for _ in range(round(num_sentences * share))]
        text = "".join("".join(f"{t} {g}\n" for t, g in zip(tokens, tags)) + "\n" for tokens, tags in sentences)
        write_text_atomic(text, Path(data_dir) / f"{split}.txt")
        counts[split] = len(sentences)
    return counts
