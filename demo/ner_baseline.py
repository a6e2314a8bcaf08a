"""The score to beat on a built text dataset: tag each word with its most common tag in train (O for
a word train never showed), scored on test as evaluate.py scores a model; printed beside the model's.

Example:
    python -m demo.ner_baseline --data_dir data/built_NER --model_dir experiments/ner_base
"""

import argparse
from collections import Counter, defaultdict
from pathlib import Path

from model.utils.conlleval import scores
from model.utils.errors import run_main
from model.utils.files import load_json, read_lines

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data_dir", default="data/built_NER", help="Output of build_vocab.py")
parser.add_argument("--model_dir", default="experiments/ner_base", help="Experiment evaluated on test")


def read_split(data_dir, split):
    return [
        (sentence.split(), labels.split())
        for sentence, labels in zip(
            *(read_lines(Path(data_dir, split, name)) for name in ("sentences.txt", "labels.txt"))
        )
    ]


def main(argv=None):
    args = parser.parse_args(argv)
    tags_of = defaultdict(Counter)
    for tokens, tags in read_split(args.data_dir, "train"):
        for token, tag in zip(tokens, tags):
            tags_of[token][tag] += 1
    test = read_split(args.data_dir, "test")
    guessed = [[tags_of[t].most_common(1)[0][0] if t in tags_of else "O" for t in tokens] for tokens, _ in test]
    accuracy = sum(g == t for guess, (_, tags) in zip(guessed, test) for g, t in zip(guess, tags))
    accuracy /= sum(len(tags) for _, tags in test)
    f1 = scores([tags for _, tags in test], guessed)[0]["entity_f1"]
    model = load_json(Path(args.model_dir) / "metrics_test_best_weights.json")
    print(f"{'test split':<42} {'token accuracy':>14} {'entity F1':>10}")
    print(f"{'most common tag of each word in train':<42} {accuracy:>14.3f} {f1:>10.3f}")
    print(f"{args.model_dir + ' (best weights)':<42} {model['accuracy']:>14.3f} {model['entity_f1']:>10.3f}")


if __name__ == "__main__":
    run_main(main)
