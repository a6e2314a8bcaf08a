"""model/utils/params.py: params.json checked against what the code declares, defaults, overrides."""

import json
import re

import pytest
from conftest import tiny_params

import model.input_fn  # noqa: F401  (declares the augmentation's hyperparameters)
import model.model_fn
import model.text_model_fn  # noqa: F401  (declares the text networks)
from model.utils.errors import UserError
from model.utils.params import NETWORKS, Params, declared, load_params


def write_json(path, content):
    path.write_text(json.dumps(content))
    return path


def experiment(tmp_path, **params):
    write_json(tmp_path / "params.json", params)
    return tmp_path


def test_params_gives_attribute_and_dict_access(tmp_path):
    params = Params(write_json(tmp_path / "params.json", {"learning_rate": 0.01, "batch_size": 32}))

    assert params.learning_rate == 0.01
    assert params.dict["batch_size"] == 32


def test_params_saved_then_reloaded_are_equal(tmp_path):
    params = Params(write_json(tmp_path / "params.json", {"learning_rate": 0.01, "use_batch_norm": True}))
    params.batch_size = 8

    params.save(tmp_path / "saved.json")

    assert Params(tmp_path / "saved.json").dict == {"learning_rate": 0.01, "use_batch_norm": True, "batch_size": 8}


def test_a_hyperparameter_the_code_never_declared_names_the_file_to_edit(tmp_path):
    params = Params(write_json(tmp_path / "params.json", {"learning_rate": 0.01}))

    with pytest.raises(UserError, match="'num_blocks', which is not declared.*model/model_fn.py"):
        _ = params.num_blocks


def test_load_params_on_a_missing_folder_names_it(tmp_path):
    with pytest.raises(UserError, match="no_such_experiment"):
        load_params(tmp_path / "no_such_experiment")


def test_load_params_on_a_folder_without_params_json_names_it(tmp_path):
    folder = tmp_path / "empty_experiment"
    folder.mkdir()

    with pytest.raises(UserError, match="No params.json in .*empty_experiment"):
        load_params(folder)


def test_load_params_reads_params_json(model_dir):
    assert load_params(model_dir).image_size == 16


def test_every_key_left_out_takes_its_default_except_num_labels(tmp_path):
    params = load_params(experiment(tmp_path, num_labels=3))

    assert params.num_labels == 3
    assert params.learning_rate == model.model_fn.optimizer.hyperparameters["learning_rate"].default
    assert params.num_channels == 16 and params.use_batch_norm is True  # base_model's own
    assert "num_blocks" not in params.dict  # the resnet's: not this run's
    with pytest.raises(UserError, match="'num_labels' is missing"):
        load_params(experiment(tmp_path, learning_rate=0.01))


@pytest.mark.parametrize("version", sorted(NETWORKS))
def test_each_network_gets_its_own_hyperparameters_and_not_the_others(tmp_path, version):
    own = NETWORKS[version][1]
    # What a text dataset gives: its vocabulary's sizes and fingerprint
    given = {key: "f1e2d3" if h.kind is str else 50 for key, h in own.items() if h.default is None}
    params = load_params(experiment(tmp_path, num_labels=3, model_version=version, **given))

    assert own and all(params.dict[key] == given.get(key, h.default) for key, h in own.items())
    others = {key for name, (_, declared_) in NETWORKS.items() if name != version for key in declared_} - set(own)
    assert not others & set(params.dict)


def test_a_key_of_another_network_is_accepted_and_checked(tmp_path):
    # A search over model_version keeps every network's keys in one params.json.
    assert load_params(experiment(tmp_path, num_labels=3, num_blocks=2)).num_blocks == 2
    with pytest.raises(UserError, match="num_blocks = 0 is not valid"):
        load_params(experiment(tmp_path, num_labels=3, num_blocks=0))


def test_a_run_saved_before_a_hyperparameter_existed_still_loads(tmp_path):
    # params_used.json of an earlier version of the code: no best_metric, no augmentation strengths
    old = {key: value for key, value in tiny_params().items() if key in ("learning_rate", "num_labels", "image_size")}
    write_json(tmp_path / "params_used.json", old)

    from model.utils.params import load_trained_params

    params = load_trained_params(experiment(tmp_path, **tiny_params()))

    assert params.learning_rate == old["learning_rate"] and params.best_metric == "accuracy"


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("seed", -1, "seed = -1 is not valid"),
        ("seed", 2**40, "seed = 1099511627776 is not valid"),
        ("learning_rate", 0, "learning_rate = 0 is not valid: it must be a positive number"),
        ("use_batch_norm", 1, "use_batch_norm = 1 is not valid: it must be true or false"),
        ("batch_size", 32.0, "batch_size = 32.0 is not valid"),
        ("batch_size", 2**63, "batch_size = 9223372036854775808 is not valid: it must be a whole number from 1 to"),
        ("num_channels", 10**20, "num_channels = 100000000000000000000 is not valid"),
        ("num_labels", 10**9, "num_labels = 1000000000 is not valid: it must be the number of classes, from 2"),
        ("best_metric", "acc", 'best_metric = "acc" is not valid'),
        (
            "model_version",
            "resnet9000",
            'unknown model_version "resnet9000". Known versions: base_model, resnet (model/model_fn.py); '
            "bilstm, char_bilstm (model/text_model_fn.py)",
        ),
        ("learing_rate", 0.1, "unknown hyperparameter 'learing_rate'. Did you mean 'learning_rate'?"),
    ],
)
def test_invalid_values_and_unknown_keys_are_refused_by_name(tmp_path, key, value, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_params(experiment(tmp_path, **tiny_params(**{key: value})))


def test_overrides_are_checked_like_params_json(model_dir):
    assert load_params(model_dir, ["learning_rate=0.5", "model_version=resnet"]).num_blocks == 3
    with pytest.raises(UserError, match="--param learing_rate=1: 'learing_rate' is not a hyperparameter"):
        load_params(model_dir, ["learing_rate=1"])
    with pytest.raises(UserError, match="with --param overrides: batch_size = 0 is not valid"):
        load_params(model_dir, ["batch_size=0"])


def test_every_declared_hyperparameter_has_a_valid_default():
    for version in NETWORKS:
        for key, hyperparameter in declared(version)[0].items():
            if hyperparameter.default is not None:
                hyperparameter.check(key, hyperparameter.default, "declarations")
