"""Hyperparameters: what params.json may hold, checked before anything runs. Each is declared once,
with its default and valid values: the machinery's in COMMON below, the model's own above the function
that reads them (@network, @hyperparameters). A key declared nowhere is refused by name."""

import difflib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from model.utils.errors import UserError, check_utf8
from model.utils.files import load_json, require_folder, save_json


@dataclass(frozen=True)
class Hyperparameter:
    default: object  # taken when params.json leaves the key out; None: params.json must give it
    must_be: str  # what a valid value is, for the error message
    valid: Callable = None  # checks a value beyond its type, which is the default's unless `kind`
    kind: type = None

    def check(self, key, value, source):
        kind = self.kind or type(self.default)
        # True is also the integer 1 in Python; a float hyperparameter takes whole numbers too.
        typed = isinstance(value, (int, float) if kind is float else kind) and isinstance(value, bool) == (kind is bool)
        finite = not isinstance(value, float) or math.isfinite(value)  # JSON's Infinity and NaN are no settings
        if not (typed and finite) or (self.valid and not self.valid(value)):
            raise UserError(f"{source}: {key} = {json.dumps(value)} is not valid: it must be {self.must_be}.")
        if isinstance(value, str):
            check_utf8(value, f"{source}: {key} = ")


def at_least(minimum, default, maximum=2**31 - 1):
    """A whole number; the maximum keeps a typo from reaching TensorFlow, whose counts are 32-bit."""
    return Hyperparameter(
        default, f"a whole number from {minimum} to {maximum}, such as {default}", lambda v: minimum <= v <= maximum
    )


def positive(default):
    return Hyperparameter(default, f"a positive number such as {default}", lambda v: v > 0)


def fraction(default, means, below_one=False):
    """A number from 0 (often: off) to 1, or to below 1."""
    if below_one:
        return Hyperparameter(default, f"from 0 to below 1, such as {default}: {means}", lambda v: 0 <= v < 1)
    return Hyperparameter(default, f"from 0 to 1, such as {default}: {means}", lambda v: 0 <= v <= 1)


def choice(*values):
    return Hyperparameter(values[0], f"one of {', '.join(map(json.dumps, values))}", lambda v: v in values)


def flag(default):
    return Hyperparameter(default, "true or false")


# The largest values TensorFlow and memory can take, checked where each value is read
MAX_LABELS = 10**6
MAX_IMAGE_SIZE = 4096

# Metrics where lower is better (best_weights, searches and results tables minimise them)
LOWER_IS_BETTER = ("loss",)

# The hyperparameters the machinery reads, whatever the network (the model's own are beside its code)
COMMON = {
    "model_version": Hyperparameter(
        "base_model", "the name of a network of model/model_fn.py or model/text_model_fn.py", lambda v: v in NETWORKS
    ),
    "num_labels": Hyperparameter(
        None, f"the number of classes, from 2 to {MAX_LABELS}", lambda v: 2 <= v <= MAX_LABELS, kind=int
    ),
    "image_size": at_least(1, 64, maximum=MAX_IMAGE_SIZE),
    "batch_size": at_least(1, 32),
    "num_epochs": at_least(1, 10),
    "best_metric": Hyperparameter(
        "accuracy", '"loss" or a metric of METRICS in model/model_fn.py', lambda v: v in ("loss", *METRICS)
    ),
    # Stop when the best_metric on dev has not improved for this many epochs (0: never)
    "early_stopping_patience": at_least(0, 0),
    # "balanced": weigh each image's loss by num_train_images / (num_labels * images of its class)
    "class_weight": choice("none", "balanced"),
    "seed": Hyperparameter(230, "a whole number from 0 to 4294967295", lambda v: 0 <= v < 2**32),
    "save_summary_steps": at_least(1, 5),
    "deterministic": flag(False),
    # A cache folder is written with a /, so that a typo such as "memroy" is caught.
    "cache": Hyperparameter(
        "memory", '"memory", "none", or a folder such as "/tmp"', lambda v: v in ("memory", "none") or "/" in v
    ),
    "mixed_precision": flag(False),
    "jit_compile": flag(False),
    "distribution": choice("none", "mirrored", "multi_worker"),
    "overfit_batches": at_least(0, 0),
}

# What model/model_fn.py and model/input_fn.py declare when they are imported: every script imports
# them before it loads a params.json.
DECLARED = dict(COMMON)  # key -> Hyperparameter, of every run
NETWORKS = {}  # model_version -> (the function that builds the network, the hyperparameters only it uses)
METRICS = {}  # metric name -> a function making the Keras metric


def metrics(**named):
    """Registers the metrics that training and evaluation compute, by name; best_metric may name one."""
    METRICS.update(named)
    return named


def split_metrics(*names):
    """Registers a function computing metrics over a whole split (such as entity F1) under their names."""

    def register(function):
        METRICS.update(dict.fromkeys(names))
        function.names = names
        return function

    return register


def hyperparameters(**declared):
    """Declares the hyperparameters a function reads from params, with their defaults and valid values:
    @hyperparameters(label_smoothing=fraction(0.1, "...")) above the loss."""

    def register(function):
        DECLARED.update(declared)
        function.hyperparameters = declared
        return function

    return register


def network(**own):
    """Registers a network builder under its function's name, with the hyperparameters only it uses."""

    def register(builder):
        NETWORKS[builder.__name__] = (builder, own)
        builder.hyperparameters = own
        return builder

    return register


def known_networks():
    """ "base_model, resnet (model/model_fn.py); bilstm, ... (model/text_model_fn.py)" """
    files = {}
    for name, (builder, _) in sorted(NETWORKS.items()):
        files.setdefault(builder.__module__.replace(".", "/") + ".py", []).append(name)
    return "; ".join(f"{', '.join(names)} ({file})" for file, names in files.items())


def build_network(params):
    return NETWORKS[params.model_version][0](params)


def declared(model_version):
    """({key: Hyperparameter} of a run of this network, the same of every key params.json may hold)."""
    assert NETWORKS, "import model.model_fn and model.input_fn before loading params: they declare hyperparameters"
    anywhere = DECLARED | {key: h for _, own in NETWORKS.values() for key, h in own.items()}
    return DECLARED | NETWORKS.get(model_version, (None, {}))[1], anywhere


class Params:
    """Hyperparameters loaded from a JSON file, as attributes: `params.learning_rate`."""

    def __init__(self, json_path):
        self.__dict__.update(load_json(json_path))

    def save(self, json_path):
        save_json(self.__dict__, json_path)

    @property
    def dict(self):
        """Gives dict-like access to Params: `params.dict['learning_rate']`."""
        return self.__dict__

    def __getattr__(self, name):  # only called for a name that is not a hyperparameter of the run
        if name.startswith("_"):
            raise AttributeError(name)
        raise UserError(f"The code asks for the hyperparameter '{name}', which is not declared: {HOW_TO_DECLARE}")


HOW_TO_DECLARE = (
    "declare it above the function that reads it: @network(...) for a network's own, @hyperparameters(...) "
    "for the loss, the optimizer or augment() (model/model_fn.py, model/input_fn.py)."
)


def check_params(params, source):
    """Fills in the defaults, and stops with a clear message on an unknown, missing or invalid value."""
    version = params.dict.setdefault("model_version", COMMON["model_version"].default)
    used, anywhere = declared(version)
    if version not in NETWORKS:
        raise UserError(f"{source}: unknown model_version {json.dumps(version)}. Known versions: {known_networks()}.")
    for key, value in params.dict.items():
        if key not in anywhere:
            hint = did_you_mean(key, anywhere)
            raise UserError(f"{source}: unknown hyperparameter '{key}'. {hint}If it is a new one, {HOW_TO_DECLARE}")
        used.get(key, anywhere[key]).check(key, value, source)
    for key, hyperparameter in used.items():
        if key not in params.dict and hyperparameter.default is None:
            raise UserError(f"{source}: the hyperparameter '{key}' is missing. Add it, with {hyperparameter.must_be}.")
        params.dict.setdefault(key, hyperparameter.default)


def did_you_mean(key, valid_keys):
    matches = difflib.get_close_matches(key, list(valid_keys), n=1)
    return f"Did you mean '{matches[0]}'? " if matches else ""


def load_params(model_dir, overrides=(), data_values=None, filename="params.json", check_network=None):
    """Loads and checks MODEL_DIR/params.json, with any `--param KEY=VALUE` overrides (VALUE read as
    JSON, else as a string), and the values the data decides (the number of tags of a text dataset).
    `check_network(model_version)` may refuse the network first: the data may be of another task."""
    model_dir = Path(model_dir)
    require_folder(
        model_dir, "Give an experiment folder holding a params.json, such as a copy of experiments/base_model."
    )
    if not (model_dir / filename).exists():  # a file of another kind: load_json names it
        raise UserError(f"No {filename} in {model_dir}. Copy one from experiments/base_model and edit it.")
    params, known = Params(model_dir / filename), declared(None)[1]
    for override in overrides:
        key, has_value, text = override.partition("=")
        if not has_value:
            raise UserError(f"--param {override}: expected KEY=VALUE, such as --param learning_rate=0.01.")
        if key not in known:
            raise UserError(f"--param {override}: '{key}' is not a hyperparameter. {did_you_mean(key, known)}")
        try:
            params.dict[key] = json.loads(text)
        except json.JSONDecodeError:
            params.dict[key] = text  # a bare word such as adam
    version = params.dict.get("model_version", COMMON["model_version"].default)
    if check_network and version in NETWORKS:  # an unknown one is named by check_params
        check_network(version)
    for key, value in (data_values or {}).items():
        if params.dict.setdefault(key, value) != value:
            raise UserError(
                f"{model_dir / filename}: {key} = {json.dumps(params.dict[key])}, but the data has "
                f"{json.dumps(value)}: remove {key} from it (the data decides it), or give other data."
            )
    check_params(params, f"{model_dir / filename}{' with --param overrides' if overrides else ''}")
    return params


def load_trained_params(model_dir):
    """The hyperparameters a run in model_dir trained with: params_used.json, else params.json."""
    used = Path(model_dir) / "params_used.json"
    return load_params(model_dir, filename=used.name if used.is_file() else "params.json")
