"""Entity-level precision, recall and F1 by the rules of conlleval, the CoNLL shared tasks' scorer:
an entity counts only when its type and its exact span both match. Tags are IOB1 or IOB2 ("B-PER",
"I-PER", "O"); as in conlleval, an I- tag after an O or after another type starts an entity, and a
change of type inside an entity ends it. No TensorFlow here."""

from collections import Counter


def entities(tags):
    """The set of (type, first token, last token + 1) of a sentence's tags."""
    found, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):  # the "O" at the end closes an open entity
        prefix, _, tag_kind = tag.partition("-") if tag != "O" else ("O", "", None)
        starts = prefix == "B" or (prefix == "I" and tag_kind != kind)  # conlleval's startOfChunk
        if start is not None and (prefix == "O" or starts):  # conlleval's endOfChunk
            found.add((kind, start, i))
            start, kind = None, None
        if starts:
            start, kind = i, tag_kind
    return found


def scores(true_sequences, predicted_sequences):
    """conlleval's overall and per-type scores over sentences of tags:
    ({"entity_precision", "entity_recall", "entity_f1"}, {type: {"precision", "recall", "f1", "support"}})."""
    correct, true, predicted = Counter(), Counter(), Counter()
    for true_tags, predicted_tags in zip(true_sequences, predicted_sequences):
        gold, guessed = entities(true_tags), entities(predicted_tags)
        for counter, spans in ((correct, gold & guessed), (true, gold), (predicted, guessed)):
            counter.update(kind for kind, _, _ in spans)
    per_type = {
        kind: dict(
            zip(("precision", "recall", "f1"), _prf(correct[kind], true[kind], predicted[kind])), support=true[kind]
        )
        for kind in sorted(true | predicted)
    }
    overall = _prf(sum(correct.values()), sum(true.values()), sum(predicted.values()))
    return dict(zip(("entity_precision", "entity_recall", "entity_f1"), overall)), per_type


def _prf(correct, true, predicted):
    precision = correct / predicted if predicted else 0.0
    recall = correct / true if true else 0.0
    return precision, recall, 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def scheme(sequences):
    """The tag scheme of sentences, and the numbers of those that break it: "IOB2" opens every entity with
    B-; "IOB1" with I-, keeping B- for an entity right after one of its type. The scheme is the one most
    entities follow."""
    opened_by = {"B": [], "I": []}  # sentence numbers, once per entity opened after an O or another type
    for number, tags in enumerate(sequences):
        previous = "O"
        for tag in tags:
            if tag != "O" and previous[2:] != tag[2:]:
                opened_by[tag[0]].append(number)
            previous = tag
    name, breaking = ("IOB1", opened_by["B"]) if len(opened_by["I"]) > len(opened_by["B"]) else ("IOB2", opened_by["I"])
    return name, sorted(set(breaking))
