"""The text task as a user runs it (end-to-end tier): a kill -9 and a resume, a search, the export
loaded in a fresh process, and a forker's one-file edits of model/text_model_fn.py."""

import csv
import json
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import REPO, run_script
from test_interruptions import start_training, wait_for
from test_text import TINY, text_experiment, write_corpus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A synthetic corpus of 600 sentences, built by build_vocab.py as a user runs it."""
    return write_corpus(tmp_path_factory.mktemp("ner"), 600, run_script)[1]


def test_a_text_run_killed_resumes_to_its_planned_end(built, tmp_path):
    model_dir = text_experiment(tmp_path / "ner", num_epochs=4)
    training = start_training(model_dir, built)
    wait_for(model_dir / "last_weights" / "ckpt-2.index", training)
    training.send_signal(signal.SIGKILL)
    training.wait()

    resumed = run_script("train.py", "--model_dir", model_dir, "--restore_from", model_dir / "last_weights")

    assert resumed.returncode == 0, resumed.stderr
    history = [json.loads(line) for line in (model_dir / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4] and all("entity_f1" in h for h in history)
    assert "Restored" in resumed.stderr and "Epoch 3/4" in resumed.stderr and "Epoch 1/4" not in resumed.stderr
    assert json.loads((model_dir / "run.json").read_text())["status"] == "finished"


def test_a_search_over_a_text_model_trains_and_ranks_its_trials_by_entity_f1(built, tmp_path):
    parent = text_experiment(tmp_path / "lstm_size", num_epochs=2)
    (parent / "search.json").write_text(json.dumps({"lstm_size": [8, 16]}))

    searched = run_script("search_hyperparams.py", "--parent_dir", parent, "--data_dir", built, "--evaluate")
    summary = run_script("synthesize_results.py", "--parent_dir", parent)

    assert searched.returncode == 0 and summary.returncode == 0, searched.stderr + summary.stderr
    table = (parent / "results.md").read_text().splitlines()
    assert "entity_f1" in table[0] and len(table) == 4
    f1 = [float(row.split("|")[table[0].split("|").index(" entity_f1 ")]) for row in table[2:]]
    assert f1 == sorted(f1, reverse=True)  # best first, by best_metric
    assert all((parent / f"lstm_size_{n}" / "metrics_test_best_weights.json").is_file() for n in (8, 16))


LOAD_EXPORT = """
import json, sys
import tensorflow as tf
served = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
tags = served(sentences=tf.constant(json.loads(sys.argv[2])))["tags"].numpy()
print(json.dumps([" ".join(t.decode() for t in row if t) for row in tags]))
"""


def test_the_export_loaded_in_a_fresh_process_tags_as_predict_py_does(built, tmp_path):
    model_dir = text_experiment(tmp_path / "ner", num_epochs=2)
    assert run_script("train.py", "--model_dir", model_dir, "--data_dir", built).returncode == 0
    sentences = ["Mr. Kalanvor said on Monday that talks had ended.", "Heavy rain fell in Osmine, police said."]
    (tmp_path / "in.txt").write_text("\n".join(sentences) + "\n")

    predicted = run_script("predict.py", "--model_dir", model_dir, tmp_path / "in.txt", "--output", tmp_path / "p.csv")
    exported = run_script("export.py", "--model_dir", model_dir)
    # A process that cannot import the template: only TensorFlow and the SavedModel
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_EXPORT, str(model_dir / "export" / "saved_model"), json.dumps(sentences)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert predicted.returncode == 0 and exported.returncode == 0 and loaded.returncode == 0, loaded.stderr
    with open(tmp_path / "p.csv") as f:
        assert [row["tags"] for row in csv.DictReader(f)] == json.loads(loaded.stdout.splitlines()[-1])


def test_a_network_and_a_metric_added_to_the_text_task_in_one_file(built, tmp_path):
    copy = tmp_path / "fork"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".*", "__pycache__", "data", "tests", "benchmarks"))
    model_fn = copy / "model" / "text_model_fn.py"
    text = model_fn.read_text()
    text = text.replace(
        "    accuracy=keras.metrics.SparseCategoricalAccuracy,\n",
        "    accuracy=keras.metrics.SparseCategoricalAccuracy,\n"
        "    top_2_accuracy=lambda: keras.metrics.SparseTopKCategoricalAccuracy(k=2),\n",
    )
    text = text.replace(
        "def text_inputs():",
        "@network(**BILSTM)\n"
        "def gru_tagger(params):\n"
        "    inputs = text_inputs()\n"
        '    x = keras.layers.Embedding(params.vocab_size, params.embedding_size)(inputs["words"])\n'
        "    x = keras.layers.Bidirectional(keras.layers.GRU(params.lstm_size, return_sequences=True))(x)\n"
        '    return keras.Model(inputs, keras.layers.Dense(params.num_labels, dtype="float32")(x))\n\n\n'
        "def text_inputs():",
    )
    model_fn.write_text(text)
    model_dir = text_experiment(copy / "experiments" / "gru", model_version="gru_tagger", num_epochs=2)
    model_dir.joinpath("params.json").write_text(
        json.dumps(json.loads(model_dir.joinpath("params.json").read_text()) | {"best_metric": "top_2_accuracy"})
    )

    def run(*args):
        result = subprocess.run(
            [sys.executable, *map(str, args)], cwd=copy, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    trained = run("train.py", "--model_dir", model_dir, "--data_dir", built)
    run("evaluate.py", "--model_dir", model_dir)

    assert "Found new best top_2_accuracy" in trained.stderr
    assert json.loads((model_dir / "run.json").read_text())["model"]["model_version"] == "gru_tagger"
    metrics = json.loads((model_dir / "metrics_test_best_weights.json").read_text())
    assert metrics["accuracy"] <= metrics["top_2_accuracy"] <= 1 and "entity_f1" in metrics
    assert set(TINY) <= set(json.loads((model_dir / "params_used.json").read_text()))
