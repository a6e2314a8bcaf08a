"""The text task's input pipeline: sentences -> padded batches of (features, tags), with tf.data.

features = {"words": word ids [batch, length], "chars": character ids [batch, length, MAX_WORD_LENGTH]};
tags are ids into the data's tags.txt. A batch is padded to its longest sentence with word id 0 and tag
-1: the loss and every metric leave out the positions whose tag is -1, so padding never counts."""

import hashlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from model.utils.errors import UserError
from model.utils.files import read_lines, require_folder

keras = tf.keras
MAX_WORD_LENGTH = 20  # the letters of a word the character features see (its first ones)
PADDING_TAG = -1


@keras.utils.register_keras_serializable(package="template")
class Featurize(keras.layers.Layer):
    """Tokens (strings; "" pads) -> {"words", "chars"} ids, by the data's words.txt and chars.txt: id 0
    pads, id 1 is a word (or letter) that train never showed. The training pipeline, predict.py and
    the exported model all call it, so they read a sentence the same way."""

    def __init__(self, words, chars, **kwargs):
        super().__init__(**kwargs)
        self.vocabularies = {"words": list(words), "chars": list(chars)}
        # StringLookup gives "" id 0 and an unknown string id 1, the two lines words.txt starts with
        self.lookups = {
            name: keras.layers.StringLookup(vocabulary=values[2:], mask_token="", oov_token=values[1])
            for name, values in self.vocabularies.items()
        }

    def call(self, tokens):
        letters = tf.strings.unicode_split(tokens, "UTF-8", errors="replace")
        letters = letters.to_tensor("", shape=[*tokens.shape, MAX_WORD_LENGTH])  # cut or padded to the length
        return {
            "words": tf.cast(self.lookups["words"](tokens), tf.int32),
            "chars": tf.cast(self.lookups["chars"](letters), tf.int32),
        }

    def get_config(self):
        return {**super().get_config(), "words": self.vocabularies["words"], "chars": self.vocabularies["chars"]}


def tokenize(sentences):
    """Raw text, a sentence per string -> its tokens [sentences, (tokens)], as CoNLL corpora cut them:
    punctuation is split from words ("Paris," -> "Paris", ","), and so is a sentence's final period,
    but not the period of an abbreviation ("Mr.", "U.S.")."""
    spaced = tf.strings.regex_replace(sentences, r"""([,;:!?()"]|\.\s*$)""", r" \1 ")
    return tf.strings.split(spaced)


def featurizer(data_dir):
    """The Featurize layer of a built dataset's vocabularies."""
    return Featurize(words(data_dir), read_lines(Path(data_dir) / "chars.txt"))


def words(data_dir):
    """The words of a built dataset's vocabulary, by id."""
    return read_lines(Path(data_dir) / "words.txt")


def data_values(data_dir):
    """The hyperparameters the built data decides, from its files: the number of tags, the vocabularies'
    sizes, and their fingerprint, so that a model is only ever used with the vocabulary it learnt."""
    data_dir = Path(data_dir)
    if not (data_dir / "dataset_params.json").is_file():  # written last: without it, the build did not finish
        raise UserError(f"{data_dir} lacks the dataset_params.json of a finished build. Run build_vocab.py again.")
    files = [read_lines(data_dir / name) for name in ("tags.txt", "words.txt", "chars.txt")]
    if len(files[0]) < 2 or min(len(files[1]), len(files[2])) < 3:
        raise UserError(f"{data_dir} holds vocabularies too short to be build_vocab.py's. Run build_vocab.py again.")
    fingerprint = hashlib.sha256("\n\n".join("\n".join(lines) for lines in files).encode()).hexdigest()[:16]
    return dict(zip(("num_labels", "vocab_size", "num_chars"), map(len, files))) | {"vocabulary": fingerprint}


def list_split(data_dir, split):
    """(features of each sentence, its tag ids) of a built split; features as tf.RaggedTensors."""
    folder = Path(data_dir) / split
    require_folder(folder, f"The {split} split is missing: run build_vocab.py first, or give --data_dir its output.")
    sentences, labels = read_lines(folder / "sentences.txt"), read_lines(folder / "labels.txt")
    tags = {tag: i for i, tag in enumerate(read_lines(Path(data_dir) / "tags.txt"))}
    tokens = [sentence.split() for sentence in sentences]
    tag_ids = [[tags.get(tag, -2) for tag in label.split()] for label in labels]
    if len(tokens) != len(tag_ids) or any(len(t) != len(i) or not t for t, i in zip(tokens, tag_ids)):
        raise UserError(f"{folder} does not hold one tag per token of each sentence. Rebuild it with build_vocab.py.")
    if not tokens:
        raise UserError(f"The {split} split is empty: {folder / 'sentences.txt'} holds no sentence.")
    features = featurizer(data_dir)(tf.constant([token for sentence in tokens for token in sentence]))
    lengths = [len(t) for t in tokens]
    ragged = {name: tf.RaggedTensor.from_row_lengths(values, lengths) for name, values in features.items()}
    return ragged, [np.array(ids, np.int32) for ids in tag_ids]


def check_split(features, labels, params, split):
    """Stops on tags unknown to tags.txt (the vocabulary is checked against the model's by the task)."""
    if any((ids < 0).any() for ids in labels):
        raise UserError(f"The {split} split uses tags that tags.txt lacks. Rebuild the data with build_vocab.py.")
    return []


def class_names(data_dir, num_labels):
    names = read_lines(Path(data_dir) / "tags.txt")
    if len(names) != num_labels:
        raise UserError(
            f"{Path(data_dir) / 'tags.txt'} holds {len(names)} tags, but the model has num_labels = {num_labels}. "
            "Pass the --data_dir the model was trained on."
        )
    return names


def input_fn(is_training, features, labels, params, one_pass=False):
    """A tf.data.Dataset of (features, tags) batches, each padded to its longest sentence."""
    tags = tf.RaggedTensor.from_row_lengths(np.concatenate(labels), [len(ids) for ids in labels])
    dataset = tf.data.Dataset.from_tensor_slices((features, tags))  # in memory already: nothing to cache
    # A sentence's letters come out ragged, of a fixed width: padded_batch takes dense tensors
    dataset = dataset.map(lambda x, y: ({**x, "chars": tf.convert_to_tensor(x["chars"])}, y))
    if is_training:
        dataset = dataset.shuffle(len(labels), reshuffle_each_iteration=True)
    padding = ({"words": 0, "chars": 0}, PADDING_TAG)
    return dataset.padded_batch(params.batch_size, padding_values=padding).prefetch(tf.data.AUTOTUNE)


def train_and_dev(splits, params):
    """train.py's pipelines, from {"train": (features, tags), "dev": (features, tags)}."""
    if params.overfit_batches:  # debug mode, as for images: learn a few batches by heart, and evaluate on them
        batches = input_fn(False, *splits["train"], params).take(params.overfit_batches).cache()
        return batches, batches
    return input_fn(True, *splits["train"], params), input_fn(False, *splits["dev"], params)
