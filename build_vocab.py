"""Build the vocabularies of a named-entity dataset and write its splits in one format, once.

Reads DATA_DIR in either layout:
- DATA_DIR/{train,dev,test}/sentences.txt and labels.txt: a sentence per line, its tokens separated
  by spaces, and its tags aligned with them (the CS230 layout);
- CoNLL column files DATA_DIR/train.*, dev.* (or valid.*, validation.*) and test.*: a token per
  line with its tag in the last column, a blank line between sentences, -DOCSTART- lines skipped.
The splits it lacks are set aside from train, seeded. The vocabularies come from train only: the
words seen at least --min_count times, the characters, and the tags. Writes OUTPUT_DIR/{train,dev,test}/
{sentences,labels}.txt, words.txt, chars.txt, tags.txt and dataset_params.json (sizes, counts, tag
scheme), from which train.py takes the vocabulary size and the number of tags. Details: docs/text.md.

Example:
    python build_vocab.py --data_dir data/NER --output_dir data/built_NER
"""

import model.utils.interrupts  # noqa: F401  (first: a Ctrl-C from here on ends the script quietly)

# isort: split
import argparse
import logging
import os
import random
import re
import shutil
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from model.utils.conlleval import scheme
from model.utils.dataset import SPLITS
from model.utils.errors import UserError, run_main
from model.utils.files import (
    build_folder,
    check_output,
    read_lines,
    refuse_special,
    require_folder,
    save_json,
    write_text_atomic,
)
from model.utils.logs import set_logger
from model.utils.raw_data import DEV_FOLDERS

PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1 of words.txt and chars.txt

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data_dir", default="data/NER", help="Folder with the raw dataset")
parser.add_argument("--output_dir", default="data/built_NER", help="Where to write the built dataset")
parser.add_argument("--min_count", type=int, default=2, help="Words seen fewer times in train become <unk>")
parser.add_argument("--seed", type=int, default=230, help="Seed of the dev and test splits set aside")
parser.add_argument("--dev_fraction", type=float, default=0.1, help="Share of train kept for dev, if DATA_DIR has none")
parser.add_argument("--test_fraction", type=float, default=0.1, help="Share kept for test, if DATA_DIR has none")
parser.add_argument("--synthetic", type=int, metavar="N", help="First write a demo corpus of N sentences into DATA_DIR")


def read_conll(path):
    """[(tokens, tags)] of a CoNLL column file."""
    sentences, tokens, tags = [], [], []
    for number, line in enumerate([*read_lines(path), ""], 1):
        columns = line.split()
        if columns and columns[0] == "-DOCSTART-":
            continue
        if columns and len(columns) < 2:
            raise UserError(f"{path}:{number} holds a token without a tag: each line needs a token and its tag.")
        if columns:
            tokens.append(columns[0])
            tags.append(check_tag(columns[-1], f"{path}:{number}"))
        elif tokens:
            sentences.append((tokens, tags))
            tokens, tags = [], []
    return sentences


def read_aligned(folder):
    """[(tokens, tags)] of a folder holding sentences.txt and labels.txt."""
    sentences, labels = read_lines(folder / "sentences.txt"), read_lines(folder / "labels.txt")
    if len(sentences) != len(labels):
        raise UserError(f"{folder}: sentences.txt has {len(sentences)} lines but labels.txt {len(labels)}.")
    pairs = []
    for number, (sentence, label) in enumerate(zip(sentences, labels), 1):
        tokens, tags = sentence.split(), label.split()
        if len(tokens) != len(tags):
            raise UserError(
                f"{folder / 'labels.txt'}:{number} has {len(tags)} tags for the {len(tokens)} tokens of "
                f"{folder / 'sentences.txt'}:{number}. Give each token one tag."
            )
        pairs += [(tokens, [check_tag(tag, f"{folder / 'labels.txt'}:{number}") for tag in tags])] if tokens else []
    return pairs


def check_tag(tag, where):
    """A tag as conlleval reads it: O, or B- or I- and an entity type."""
    if tag != "O" and not re.fullmatch(r"[BI]-\S+", tag):
        raise UserError(f"{where}: the tag {tag!r} is not O, B-TYPE or I-TYPE (the IOB1 and IOB2 schemes). Fix it.")
    return tag


def read_corpus(data_dir):
    """{split: [(tokens, tags)], or None if DATA_DIR does not give it}, from either layout."""
    names = {"train": ("train",), "dev": ("dev", *DEV_FOLDERS), "test": ("test",)}
    splits = {}
    for split, candidates in names.items():
        folders = [data_dir / name for name in candidates if (data_dir / name / "sentences.txt").is_file()]
        files = sorted(p for p in data_dir.iterdir() if p.is_file() and p.name.split(".")[0] in candidates)
        splits[split] = read_aligned(folders[0]) if folders else read_conll(files[0]) if files else None
    if splits["train"] is None:
        raise UserError(
            f"No train split found in {data_dir}: expected train/sentences.txt with train/labels.txt, or a CoNLL "
            "file such as train.txt (a token and its tag per line)."
        )
    return splits


@contextmanager
def named(output_dir):
    """A write that fails in the hidden folder of the build (a full disk) is named as --output_dir."""
    try:
        yield
    except OSError as error:
        error.filename = str(output_dir)
        raise


def set_aside(sentences, fraction, seed):
    """(kept, set aside): `fraction` of the sentences, drawn seeded."""
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    cut = round(len(sentences) * fraction)
    return [sentences[i] for i in sorted(order[cut:])], [sentences[i] for i in sorted(order[:cut])]


def main(argv=None):
    args = parser.parse_args(argv)
    data_dir, output_dir = Path(args.data_dir), Path(args.output_dir)
    if not (1 <= args.min_count <= 10**6 and 0 <= args.dev_fraction < 1 and 0 <= args.test_fraction < 1):
        raise UserError("--min_count must be from 1 to 1000000, and --dev_fraction and --test_fraction below 1.")
    if args.synthetic is not None and not 1 <= args.synthetic <= 10**6:
        raise UserError("--synthetic must be a number of sentences from 1 to 1000000.")
    if args.synthetic and data_dir.exists() and any(data_dir.iterdir()):
        raise UserError(f"{data_dir} is not empty: remove it, or drop --synthetic to build from it.")
    if not args.synthetic:
        require_folder(data_dir, "Give --data_dir the raw corpus, or --synthetic N to write a demo one.")
    if output_dir.resolve().is_relative_to(data_dir.resolve()) or data_dir.resolve().is_relative_to(
        output_dir.resolve()
    ):
        raise UserError(
            f"--output_dir {output_dir} and --data_dir {data_dir} overlap: the build would replace the raw corpus, "
            "or read its own output. Choose an output folder apart, such as data/built_NER."
        )
    with build_folder(output_dir, "build_vocab.py"):
        set_logger(output_dir / "build_vocab.log")
        build_vocab(args, data_dir, output_dir)


def build_vocab(args, data_dir, output_dir):
    outputs = ["words.txt", "chars.txt", "tags.txt", "dataset_params.json"]
    outputs += [f"{split}/{name}" for split in SPLITS for name in ("sentences.txt", "labels.txt")]
    for name in outputs:  # checked before the work: never over anything but a file, never through a link
        check_output(output_dir / name)
    for split in SPLITS:
        refuse_special(output_dir / split, folder=True)
    for stale in output_dir.glob(".building.*"):  # what a build killed left (this one holds the lock)
        shutil.rmtree(stale, ignore_errors=True)

    # Write the demo corpus first if asked, then read the splits; set aside those the corpus lacks
    if args.synthetic:
        from demo.synthetic_ner import generate_ner  # only needed for the demo

        logging.info(f"Wrote {sum(generate_ner(data_dir, args.synthetic, args.seed).values())} demo sentences")
    splits = read_corpus(data_dir)
    for split, fraction in (("test", args.test_fraction), ("dev", args.dev_fraction)):
        if splits[split] is None:
            splits["train"], splits[split] = set_aside(splits["train"], fraction, args.seed)
    for split, sentences in splits.items():
        if not sentences:
            raise UserError(f"The {split} split of {data_dir} holds no sentence. Give it some, or a larger fraction.")

    # The vocabularies, from train only: dev and test words the model never saw become <unk>
    counts = Counter(token for tokens, _ in splits["train"] for token in tokens)
    words = [PAD, UNK, *sorted(w for w, n in counts.items() if n >= args.min_count and w not in (PAD, UNK))]
    chars = [PAD, UNK, *sorted({c for w in counts for c in w})]
    tags = sorted({tag for _, tags in splits["train"] for tag in tags})
    if tags == ["O"]:
        raise UserError(
            f"Every tag of {data_dir}'s train split is O: there is no entity to learn. Check the tag column."
        )
    if unknown := sorted({t for s in ("dev", "test") for _, tags in splits[s] for t in tags} - set(tags)):
        raise UserError(f"dev or test use the tags {', '.join(unknown)}, which train never does. Add them to train.")
    if len(words) == 2:
        raise UserError(f"No word of train is seen {args.min_count} times or more: lower --min_count.")
    tag_scheme, breaking = scheme([tags for _, tags in splits["train"]])
    if breaking:
        logging.warning(
            f"Warning: {len(breaking)} train sentences break {tag_scheme} (the first: number {breaking[0] + 1})"
        )

    # Write everything into a hidden folder, then move it into place, the record last: a build that fails
    # or is stopped leaves the earlier one whole
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".building.") as building, named(output_dir):
        staged = Path(building)
        for split, sentences in splits.items():
            for name, column in (("sentences.txt", 0), ("labels.txt", 1)):
                write_text_atomic("".join(" ".join(s[column]) + "\n" for s in sentences), staged / split / name)
        for name, values in (("words.txt", words), ("chars.txt", chars), ("tags.txt", tags)):
            write_text_atomic("".join(f"{value}\n" for value in values), staged / name)
        record = {"vocab_size": len(words), "num_chars": len(chars), "num_labels": len(tags), "tag_scheme": tag_scheme}
        record |= {f"{split}_size": len(sentences) for split, sentences in splits.items()}
        save_json(record | {"min_count": args.min_count, "tags": tags}, staged / "dataset_params.json")
        (output_dir / "dataset_params.json").unlink(missing_ok=True)  # until the end, the data is no build
        for name in (*SPLITS, "words.txt", "chars.txt", "tags.txt", "dataset_params.json"):
            if (output_dir / name).is_dir():
                shutil.rmtree(output_dir / name)
            os.replace(staged / name, output_dir / name)
    for split, sentences in splits.items():
        logging.info(f"{split}: {len(sentences)} sentences, {sum(len(t) for t, _ in sentences)} tokens")
    logging.info(
        f"Vocabulary: {len(words)} words ({args.min_count}+ times in train), {len(chars)} characters, "
        f"tags {', '.join(tags)} ({tag_scheme})"
    )
    logging.info(f"Done building the dataset in {output_dir}")


if __name__ == "__main__":
    run_main(main)
