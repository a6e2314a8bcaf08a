"""The text task (named-entity recognition) on the same scripts: build_vocab.py and its faults, entity F1
by conlleval's rules, padding that never counts, training, evaluation, search, predict.py and the
export. A tiny corpus is written in code (demo/synthetic_ner.py) and trained once per module."""

import csv
import io
import json
import shutil

import numpy as np
import pytest
from conftest import run_in_process

from model.utils.conlleval import entities, scheme, scores

# conlleval's rules, worked by hand


@pytest.mark.parametrize(
    "tags, expected",
    [
        (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 2), ("LOC", 3, 4)}),
        (["O", "I-PER", "I-PER"], {("PER", 1, 3)}),  # an I- after an O opens an entity (IOB1)
        (["B-PER", "I-LOC", "I-LOC"], {("PER", 0, 1), ("LOC", 1, 3)}),  # a change of type ends one, opens one
        (["I-ORG", "B-ORG", "I-ORG"], {("ORG", 0, 1), ("ORG", 1, 3)}),  # IOB1's B-: two entities side by side
        (["B-PER", "B-PER", "O"], {("PER", 0, 1), ("PER", 1, 2)}),
        (["O", "O"], set()),
        (["I-PER"], {("PER", 0, 1)}),  # an entity that ends the sentence
    ],
)
def test_entities_follow_conllevals_rules(tags, expected):
    assert entities(tags) == expected


def test_an_entity_counts_only_when_its_type_and_exact_span_match():
    true = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "O"]]
    predicted = [["B-PER", "O", "O", "B-ORG", "O"], ["B-ORG", "O"]]  # a span cut short, a wrong type, one right

    overall, per_type = scores(true, predicted)

    assert overall["entity_precision"] == pytest.approx(1 / 3) and overall["entity_recall"] == pytest.approx(1 / 3)
    assert overall["entity_f1"] == pytest.approx(1 / 3)
    assert per_type["ORG"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert per_type["PER"]["f1"] == 0 and per_type["LOC"]["support"] == 1


def test_the_tag_scheme_is_the_one_most_entities_follow():
    assert scheme([["B-PER", "I-PER", "O", "B-LOC"]]) == ("IOB2", [])
    assert scheme([["I-PER", "O", "I-LOC"], ["I-ORG", "B-ORG"]]) == ("IOB1", [])
    assert scheme([["B-PER", "O"], ["O", "I-LOC"], ["B-ORG"], ["B-LOC"]]) == ("IOB2", [1])


# build_vocab.py


def write_conll(folder, splits):
    """CoNLL files folder/{split}.txt from {split: [[(token, tag), ...], ...]}."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, sentences in splits.items():
        text = "".join("".join(f"{t} {g}\n" for t, g in sentence) + "\n" for sentence in sentences)
        (folder / f"{split}.txt").write_text("-DOCSTART- O\n\n" + text)
    return folder


SENTENCE = [("Mr.", "O"), ("Kalan", "B-PER"), ("Osmine", "I-PER"), ("left", "O"), (".", "O")]


def test_build_vocab_reads_either_layout_and_builds_the_vocabularies_from_train_only(tmp_path):
    train = [
        SENTENCE,
        [("Shares", "O"), ("of", "O"), ("Belne", "B-ORG"), ("rose", "O")],
        [("Mr.", "O"), ("Os", "B-LOC")],
    ]
    dev, test = [[("Mr.", "O"), ("Zorosbel", "B-PER")]], [[("Rain", "O"), ("in", "O"), ("Pol", "B-LOC")]]
    conll = write_conll(tmp_path / "conll", {"train": train, "valid": dev, "test": test})
    aligned = tmp_path / "aligned"
    for split, sentences in (("train", train), ("dev", dev), ("test", test)):
        (aligned / split).mkdir(parents=True)
        for name, column in (("sentences.txt", 0), ("labels.txt", 1)):
            lines = "".join(" ".join(pair[column] for pair in s) + "\n" for s in sentences)
            (aligned / split / name).write_text(lines)

    built = {}
    for raw in (conll, aligned):
        result = run_in_process("build_vocab.py", "--data_dir", raw, "--output_dir", tmp_path / f"{raw.name}_built")
        assert result.returncode == 0, result.stderr
        built[raw.name] = {p.name: p.read_text() for p in (tmp_path / f"{raw.name}_built").rglob("*.txt")}

    assert built["conll"] == built["aligned"]  # the same splits, vocabularies and tags from both layouts
    words = built["conll"]["words.txt"].split()
    assert words[:2] == ["<pad>", "<unk>"] and "Mr." in words  # seen twice in train: min_count 2
    assert "Kalan" not in words and "Zorosbel" not in words and "Pol" not in words  # once in train; not in train
    assert built["conll"]["tags.txt"].split() == ["B-LOC", "B-ORG", "B-PER", "I-PER", "O"]
    record = json.loads((tmp_path / "conll_built" / "dataset_params.json").read_text())
    assert record["num_labels"] == 5 and record["tag_scheme"] == "IOB2" and record["train_size"] == 3


def test_build_vocab_sets_aside_the_splits_a_corpus_lacks_seeded(tmp_path):
    raw = write_conll(tmp_path / "raw", {"train": [SENTENCE] * 30 + [[("Mr.", "O"), ("Pol", "B-LOC")]] * 10})
    outputs = []
    for run in ("a", "b"):
        result = run_in_process("build_vocab.py", "--data_dir", raw, "--output_dir", tmp_path / run)
        assert result.returncode == 0, result.stderr
        outputs.append([(tmp_path / run / s / "sentences.txt").read_text() for s in ("train", "dev", "test")])

    assert outputs[0] == outputs[1]
    assert [len(text.splitlines()) for text in outputs[0]] == [32, 4, 4]


@pytest.mark.parametrize(
    "make, words",
    [
        ("mismatch", "train/labels.txt:2 has 2 tags for the 3 tokens of"),
        ("no tag", "train.txt:4 holds a token without a tag"),
        ("latin-1", "train.txt:3 is not UTF-8 text"),
        ("empty dev", "The dev split of"),
        ("unknown tag", "dev or test use the tags B-MISC, which train never does"),
        ("no train", "No train split found in"),
        ("odd tag", "train.txt:4: the tag 'X' is not O, B-TYPE or I-TYPE"),
        ("no type", "train.txt:4: the tag 'B-' is not O"),
        ("no entity", "Every tag of"),
        ("overlap", "overlap: the build would replace the raw corpus"),
        ("min_count", "No word of train is seen 1000 times or more: lower --min_count"),
    ],
)
def test_build_vocab_refuses_a_broken_corpus_naming_the_file_and_line(tmp_path, make, words):
    raw = tmp_path / "raw"
    if make == "mismatch":
        (raw / "train").mkdir(parents=True)
        (raw / "train" / "sentences.txt").write_text("Mr. Kalan left\nShares of Belne\n")
        (raw / "train" / "labels.txt").write_text("O B-PER O\nO O\n")
    else:
        write_conll(raw, {"train": [SENTENCE], "dev": [SENTENCE], "test": [SENTENCE]})
    if make == "no tag":
        (raw / "train.txt").write_text("-DOCSTART- O\n\nMr. O\nKalan\n")
    elif make == "latin-1":
        (raw / "train.txt").write_bytes("-DOCSTART- O\n\nZürich B-LOC\n".encode("latin-1"))
    elif make == "empty dev":
        (raw / "dev.txt").write_text("-DOCSTART- O\n\n")
    elif make == "unknown tag":
        write_conll(raw, {"dev": [[("Expo", "B-MISC")]]})
    elif make == "no train":
        (raw / "train.txt").unlink()
    elif make in ("odd tag", "no type"):
        (raw / "train.txt").write_text(f"-DOCSTART- O\n\nMr. O\nKalan {'X' if make == 'odd tag' else 'B-'}\n")
    elif make == "no entity":
        write_conll(raw, {"train": [[("Mr.", "O"), ("left", "O")]]})
    output = raw / "built" if make == "overlap" else tmp_path / "built"
    options = ["--min_count", "1000"] if make == "min_count" else []

    result = run_in_process("build_vocab.py", "--data_dir", raw, "--output_dir", output, *options)

    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("Error:") == 1 and words in result.stderr, result.stderr
    assert not output.exists()  # a build that fails leaves nothing behind


@pytest.mark.parametrize("fault", ["full disk", "Ctrl-C"])
def test_a_rebuild_that_fails_leaves_the_earlier_build_whole(tmp_path, monkeypatch, fault):
    import build_vocab

    raw = write_conll(tmp_path / "raw", {"train": [SENTENCE] * 3, "dev": [SENTENCE], "test": [SENTENCE]})
    assert run_in_process("build_vocab.py", "--data_dir", raw, "--output_dir", tmp_path / "built").returncode == 0
    before = {p: p.read_bytes() for p in (tmp_path / "built").rglob("*") if p.is_file() and p.suffix != ".log"}
    write_conll(raw, {"train": [SENTENCE, [("Shares", "O"), ("of", "O"), ("Belne", "B-ORG")]] * 5})
    written, write = [], build_vocab.write_text_atomic

    def fail_midway(text, path):  # the fourth file of the build
        written.append(path)
        if len(written) == 4:
            raise OSError(28, "No space left on device", str(path)) if fault == "full disk" else KeyboardInterrupt
        write(text, path)

    monkeypatch.setattr(build_vocab, "write_text_atomic", fail_midway)
    result = run_in_process("build_vocab.py", "--data_dir", raw, "--output_dir", tmp_path / "built")

    assert result.returncode == (2 if fault == "full disk" else 130), result.stderr
    assert {p: p.read_bytes() for p in before} == before  # every file as it was
    assert not list((tmp_path / "built").glob(".building*")) and len(written) == 4


def test_build_vocab_warns_of_sentences_that_break_the_tag_scheme(tmp_path):
    broken = [("Mr.", "O"), ("Kalan", "I-PER")]  # an IOB2 corpus: an entity opens with B-
    raw = write_conll(tmp_path / "raw", {"train": [SENTENCE, SENTENCE, broken], "dev": [SENTENCE], "test": [SENTENCE]})

    result = run_in_process("build_vocab.py", "--data_dir", raw, "--output_dir", tmp_path / "built")

    assert result.returncode == 0, result.stderr
    assert "Warning: 1 train sentences break IOB2 (the first: number 3)" in result.stderr


# Training, evaluation, prediction and the export, on a tiny synthetic corpus

TINY = {"embedding_size": 32, "char_embedding_size": 8, "char_filters": 16, "lstm_size": 32, "batch_size": 16}


def write_corpus(root, sentences, run=run_in_process):
    """A synthetic corpus of `sentences` sentences in root/raw, built by `run` into root/built."""
    result = run("build_vocab.py", "--synthetic", sentences, "--data_dir", root / "raw", "--output_dir", root / "built")
    assert result.returncode == 0, result.stderr
    return root / "raw", root / "built"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A synthetic corpus of 1000 sentences, built: (raw folder, built folder)."""
    return write_corpus(tmp_path_factory.mktemp("ner"), 1000)


def text_experiment(folder, **overrides):
    folder.mkdir(parents=True)
    params = json.loads(open("experiments/ner_base/params.json").read()) | TINY | overrides
    (folder / "params.json").write_text(json.dumps(params))
    return folder


@pytest.fixture(scope="module")
def tagger(corpus, tmp_path_factory):
    """char_bilstm trained 5 epochs on the corpus, and evaluated on test: its folder."""
    model_dir = text_experiment(tmp_path_factory.mktemp("tagger") / "ner", num_epochs=5, learning_rate=0.01)
    trained = run_in_process("train.py", "--model_dir", model_dir, "--data_dir", corpus[1])
    assert trained.returncode == 0, trained.stderr
    evaluated = run_in_process("evaluate.py", "--model_dir", model_dir)
    assert evaluated.returncode == 0, evaluated.stderr
    return model_dir


def test_training_and_evaluation_report_entity_f1_and_each_entity_type(tagger):
    history = [json.loads(line) for line in (tagger / "history.jsonl").read_text().splitlines()]
    test = json.loads((tagger / "metrics_test_best_weights.json").read_text())

    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert max(h["entity_f1"] for h in history) > 0.5  # it learnt: the entities are there to find
    best = max(history, key=lambda h: h["entity_f1"])
    assert json.loads((tagger / "metrics_eval_best_weights.json").read_text())["entity_f1"] == best["entity_f1"]
    assert set(test["per_entity_type"]) == {"LOC", "ORG", "PER"} and 0 < test["entity_f1"] <= 1
    assert set(test["per_class"]) == {"B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O"}
    log = (tagger / "evaluate.log").read_text()
    assert "Per entity type, on the test split:" in log and "entity_f1: " in log


def test_padding_never_counts_in_the_loss_or_the_metrics(tagger, corpus):
    import tensorflow as tf

    from model import text_model_fn
    from model.evaluation import Metrics
    from model.training import make_train_step, model_spec
    from model.utils.checkpoints import load_trained_model

    params, network, _ = load_trained_model(tagger)
    features, labels = text_model_fn.TASK.list_split(corpus[1], "dev")
    short = [i for i, tags in enumerate(labels) if len(tags) < 12][:6]  # sentences padded a lot beside a long one

    def batch_of(sentences, padding):
        words = tf.pad(tf.gather(features["words"], sentences).to_tensor(), [[0, 0], [0, padding]])
        chars = tf.pad(tf.gather(features["chars"], sentences).to_tensor(), [[0, 0], [0, padding], [0, 0]])
        tags = tf.ragged.constant([labels[i] for i in sentences]).to_tensor(-1)
        return {"words": words, "chars": chars}, tf.pad(tags, [[0, 0], [0, padding]], constant_values=-1)

    def results(batches, padding):
        metrics = Metrics(text_model_fn.TASK)
        for inputs, tags in (batch_of(sentences, padding) for sentences in batches):
            logits = network(inputs, training=False)
            metrics.update(tags, logits, text_model_fn.loss(tags, logits, params))
        return metrics.result()

    alone, together = results([[i] for i in short], padding=0), results([short], padding=30)

    assert together["loss"] == pytest.approx(alone["loss"], rel=1e-5)
    assert together["accuracy"] == pytest.approx(alone["accuracy"], rel=1e-6)
    # The training step's loss too: the mean over the words of the batch, however long its padding
    params.dict["dropout_rate"] = 0.0  # training's dropout draws differ between two steps
    spec = model_spec(params, tf.distribute.get_strategy(), labels, text_model_fn.TASK)
    step, weights = make_train_step(spec), network.get_weights()
    losses = []
    for padding in (0, 30):
        spec.model.set_weights(weights)  # the loss returned is the one before the step's update
        losses.append(float(step(*batch_of(short, padding))))
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_predict_and_the_export_give_the_same_tags(tagger, corpus, tmp_path):
    import tensorflow as tf

    sentences = [line for line in (corpus[1] / "test" / "sentences.txt").read_text().splitlines()][:20]
    (tmp_path / "in.txt").write_text("\n".join(sentences) + "\n")

    predicted = run_in_process("predict.py", "--model_dir", tagger, tmp_path / "in.txt", "--output", tmp_path / "p.csv")
    exported = run_in_process("export.py", "--model_dir", tagger, "--output_dir", tmp_path / "export")

    assert predicted.returncode == 0 and exported.returncode == 0, predicted.stderr + exported.stderr
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    served = tf.saved_model.load(str(tmp_path / "export" / "saved_model")).signatures["serving_default"]
    tags = served(sentences=tf.constant(sentences))["tags"].numpy()
    assert [row["tags"] for row in rows] == [" ".join(t.decode() for t in row if t) for row in tags]
    assert any(row["entities"] for row in rows) and "Tagging 20 sentences" in predicted.stderr


def test_a_text_model_is_not_exported_to_tflite_and_says_why(tagger, tmp_path):
    result = run_in_process("export.py", "--model_dir", tagger, "--format", "tflite", "--output_dir", tmp_path / "x")

    assert result.returncode == 2 and "string operations that TensorFlow Lite" in result.stderr
    assert not (tmp_path / "x").exists()  # refused before anything is written


def test_a_network_of_the_other_task_is_refused_by_name(corpus, tmp_path):
    model_dir = text_experiment(tmp_path / "ner", model_version="base_model")

    result = run_in_process("train.py", "--model_dir", model_dir, "--data_dir", corpus[1])

    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "model_version base_model is a network for images, but" in result.stderr
    assert not (model_dir / "run.json").exists()


def test_a_text_network_on_images_is_refused_by_name_before_anything_else(tmp_path):
    from conftest import write_built_dataset

    model_dir = text_experiment(tmp_path / "ner")

    result = run_in_process(
        "train.py", "--model_dir", model_dir, "--data_dir", write_built_dataset(tmp_path / "images")
    )

    assert result.returncode == 2 and "model_version char_bilstm is a network for text, but" in result.stderr


@pytest.mark.parametrize("change", ["other words", "the same words in another order"])
def test_a_model_is_used_only_with_the_vocabulary_it_learnt(tagger, corpus, tmp_path, change):
    other = shutil.copytree(corpus[1], tmp_path / "other")
    words = (other / "words.txt").read_text().splitlines()
    words = [*words[:2], *reversed(words[2:])] if change != "other words" else [*words, "Zzyzx"]
    (other / "words.txt").write_text("\n".join(words) + "\n")

    for script in ("evaluate.py", "predict.py"):
        args = (
            ["--output_dir", tmp_path / "eval"] if script == "evaluate.py" else [corpus[1] / "test" / "sentences.txt"]
        )
        result = run_in_process(script, "--model_dir", tagger, "--data_dir", other, *args)

        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "The model was trained on data with another" in result.stderr


def test_sentences_on_standard_input_that_are_not_utf8_are_named(tagger, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"Mr. Smith left .\nCaf\xe9 .\n")))

    result = run_in_process("predict.py", "--model_dir", tagger, "-")

    assert result.returncode == 2 and "standard input:2 is not UTF-8 text" in result.stderr


def test_a_search_over_a_text_model_plans_its_trials(corpus, tmp_path):
    parent = text_experiment(tmp_path / "lstm_size")
    (parent / "search.json").write_text(json.dumps({"lstm_size": [8, 16], "dropout_rate": [0.3]}))

    result = run_in_process("search_hyperparams.py", "--parent_dir", parent, "--data_dir", corpus[1], "--dry_run")

    assert result.returncode == 0, result.stderr
    assert "2 trials (dry run: nothing was run)" in result.stdout
    (parent / "search.json").write_text(json.dumps({"vocab_size": [100, 200]}))
    refused = run_in_process("search_hyperparams.py", "--parent_dir", parent, "--data_dir", corpus[1])
    assert refused.returncode == 2 and "the data decides vocab_size" in refused.stderr
    assert not [p for p in parent.iterdir() if p.is_dir()]


def test_the_data_decides_the_number_of_tags(corpus, tmp_path):
    model_dir = text_experiment(tmp_path / "ner", num_labels=3)

    result = run_in_process("train.py", "--model_dir", model_dir, "--data_dir", corpus[1])

    assert result.returncode == 2 and "num_labels = 3, but the data has 7" in result.stderr
    assert np.all([not (model_dir / name).exists() for name in ("run.json", "last_weights")])
