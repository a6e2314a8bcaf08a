"""The text task's model: the networks that tag each word of a sentence, the loss and the metrics. This
is the file to edit for a text project; the optimizer and its learning-rate schedule are model_fn.py's.

A network is a function `params -> keras.Model` from {"words", "chars"} ids (model/text_input_fn.py) to one
logit per tag for each word; @network registers it as for images. The loss and every metric leave out
the padding (tag -1): the training and evaluation loops weigh each token by whether it is a word."""

import numpy as np
import tensorflow as tf

from model import model_fn, text_input_fn  # noqa: F401  (model_fn: the optimizer both tasks train with)
from model.text_input_fn import MAX_WORD_LENGTH
from model.utils import conlleval
from model.utils.params import Hyperparameter, at_least, fraction, metrics, network, split_metrics
from model.utils.tasks import Task, register_task

keras = tf.keras

# What both networks read: the vocabulary's size (and its fingerprint), which train.py takes from the data
# build_vocab.py wrote, and the sizes of their layers
BILSTM = {
    "vocab_size": Hyperparameter(None, "the number of words of words.txt", lambda v: 2 <= v <= 10**7, kind=int),
    "vocabulary": Hyperparameter(None, "the fingerprint of the data's vocabularies", kind=str),
    "embedding_size": at_least(1, 100),
    "lstm_size": at_least(1, 100),  # units of each direction's LSTM
    "dropout_rate": fraction(0.5, "the share of features dropped before and after the LSTM", below_one=True),
}


@network(**BILSTM)
def bilstm(params):
    """The CS230 NER network: word embeddings, a bidirectional LSTM, and a dense layer giving each
    word's tag logits. A word that train never showed is <unk>: only its context tells its tag."""
    inputs = text_inputs()
    x = keras.layers.Embedding(params.vocab_size, params.embedding_size, mask_zero=True)(inputs["words"])
    return keras.Model(inputs, tag_logits(x, inputs, params), name="bilstm")


@network(
    **BILSTM,
    num_chars=Hyperparameter(None, "the number of characters of chars.txt", lambda v: 2 <= v <= 10**6, kind=int),
    char_embedding_size=at_least(1, 25),
    char_filters=at_least(1, 50),  # features read from each word's letters
)
def char_bilstm(params):
    """bilstm, each word's embedding joined by features of its letters (a convolution over them, max-pooled):
    capitals, suffixes and shapes, which tag words that train never showed."""
    inputs = text_inputs()
    words = keras.layers.Embedding(params.vocab_size, params.embedding_size, mask_zero=True)(inputs["words"])
    letters = keras.layers.Embedding(params.num_chars, params.char_embedding_size)(inputs["chars"])
    # A 1x3 convolution slides over the letters of each word, never across words
    letters = keras.layers.Conv2D(params.char_filters, (1, 3), padding="same", activation="relu")(letters)
    letters = keras.layers.MaxPooling2D((1, MAX_WORD_LENGTH))(letters)  # the strongest of each feature in a word
    letters = keras.layers.Reshape((-1, params.char_filters))(letters)
    return keras.Model(
        inputs, tag_logits(keras.layers.Concatenate()([words, letters]), inputs, params), name="char_bilstm"
    )


def text_inputs():
    return {
        "words": keras.Input(shape=(None,), dtype="int32", name="words"),
        "chars": keras.Input(shape=(None, MAX_WORD_LENGTH), dtype="int32", name="chars"),
    }


def tag_logits(x, inputs, params):
    """Dropout, a bidirectional LSTM over the sentence, dropout, one logit per tag. The LSTM is given the
    padding's mask itself: Keras loses a mask where features without one are joined to it."""
    x = keras.layers.Dropout(params.dropout_rate)(x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(params.lstm_size, return_sequences=True))(
        x, mask=keras.ops.not_equal(inputs["words"], 0)
    )
    x = keras.layers.Dropout(params.dropout_rate)(x)
    return keras.layers.Dense(params.num_labels, name="logits", dtype="float32")(x)


def loss(labels, logits, params):
    """The cross-entropy of each token's tag; padding (tag -1) is computed as tag 0 and left out by the loops."""
    return keras.losses.sparse_categorical_crossentropy(tf.maximum(labels, 0), logits, from_logits=True)


# Token accuracy, over the words only; add a Keras metric in a line, as in model_fn.py
METRICS = metrics(
    accuracy=keras.metrics.SparseCategoricalAccuracy,
)


@split_metrics("entity_precision", "entity_recall", "entity_f1")
def entity_metrics(true_tags, predicted_tags, tag_names):
    """Entity-level precision, recall and F1 over a whole split, by conlleval's rules; and per entity type."""
    names = np.array(tag_names)
    return conlleval.scores([names[t] for t in true_tags], [names[p] for p in predicted_tags])


def tagger(network, featurize, tag_names):
    """Raw sentences -> {"tokens", "tags"} [sentences, longest], "" after each sentence's end: the
    tokenization, the network and the tag names in one function, which predict.py runs and export.py saves."""
    names = tf.constant(tag_names)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
    def tag(sentences):
        tokens = text_input_fn.tokenize(sentences).to_tensor("")
        predicted = tf.gather(names, tf.argmax(network(featurize(tokens), training=False), axis=-1))
        return {"tokens": tokens, "tags": tf.where(tokens == "", "", predicted)}

    return tag


TASK = register_task(
    Task(
        "text",
        __name__,
        list_split=text_input_fn.list_split,
        check_split=text_input_fn.check_split,
        class_names=text_input_fn.class_names,
        data_values=text_input_fn.data_values,
        train_and_dev=text_input_fn.train_and_dev,
        input_fn=text_input_fn.input_fn,
        loss=loss,
        metrics=METRICS,
        split_metrics=entity_metrics,
        words=text_input_fn.words,
        main_metric="entity_f1",
    )
)
