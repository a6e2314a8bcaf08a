"""Hyperparameters: what params.json may hold, checked before anything runs.

Every hyperparameter is declared once, with its default and its valid values: the common ones
below, each network's own next to it in model/model_fn.py (@network), each augmentation's in
model/input_fn.py (AUGMENTATIONS). params.json may leave any of them out and get the default,
except num_labels; a key declared nowhere is refused, with the closest valid key suggested.
"""

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from model.errors import UserError
from model.files import load_json, save_json


@dataclass(frozen=True)
class Hyperparameter:
    default: object  # the value when params.json leaves it out; None: params.json must give it
    must_be: str  # what a valid value looks like, for the error message
    valid: Callable = None  # the check of a value beyond its type (the default's type, or `kind`)
    kind: type = None

    def check(self, key, value, source):
        kind = self.kind or type(self.default)
        # In Python True is also the integer 1, and a float hyperparameter takes integers too.
        typed = isinstance(value, kind) if kind is not float else isinstance(value, (int, float))
        if isinstance(value, bool) != (kind is bool) or not typed or (self.valid and not self.valid(value)):
            raise UserError(f"{source}: {key} = {json.dumps(value)} is not valid: it must be {self.must_be}.")


def positive(example):
    return Hyperparameter(example, f"a positive number such as {example}", lambda v: v > 0)


def at_least(minimum, example, unit="a whole number"):
    return Hyperparameter(example, f"{unit} of at least {minimum}, such as {example}", lambda v: v >= minimum)


def one_of(*choices, means=""):
    return Hyperparameter(choices[0], f"one of {', '.join(map(json.dumps, choices))}{means}", lambda v: v in choices)


def true_or_false(default, means=""):
    return Hyperparameter(default, f"true or false{means}")


def metric_names():
    from model.model_fn import METRICS  # imported here: model_fn imports this module

    return ("loss", *METRICS)


# Metrics where lower is better: best_weights, searches and results tables minimise them.
LOWER_IS_BETTER = ("loss",)

# The hyperparameters of every network and run.
COMMON = {
    "model_version": Hyperparameter(
        "base_model", "the name of a network in model/model_fn.py", lambda v: v in NETWORKS
    ),
    "num_labels": Hyperparameter(None, "the number of classes, at least 2", lambda v: v >= 2, kind=int),
    "image_size": at_least(1, 64, "the side of the images in pixels"),
    "learning_rate": positive(1e-3),
    "batch_size": at_least(1, 32),
    "num_epochs": at_least(1, 10),
    "seed": Hyperparameter(230, "a whole number from 0 to 4294967295, such as 230", lambda v: 0 <= v < 2**32),
    "save_summary_steps": at_least(1, 5),
    "deterministic": true_or_false(False, " (true: runs repeat exactly; can be slower on GPU)"),
    # A cache folder is written with a /, so that a typo such as "memroy" is caught.
    "cache": Hyperparameter(
        "memory",
        '"memory", "none", or a folder written with a /, such as "/tmp"',
        lambda v: v in ("memory", "none") or "/" in v,
    ),
    "mixed_precision": true_or_false(False, " (true pays off on GPUs only)"),
    "jit_compile": true_or_false(False, " (true pays off on GPUs only)"),
    "distribution": one_of("none", "mirrored", "multi_worker"),
    "overfit_batches": at_least(0, 0, "0 (off) or a number of batches to learn by heart"),
    "best_metric": Hyperparameter(
        "accuracy", '"loss" or a metric of METRICS in model/model_fn.py', lambda v: v in metric_names()
    ),
}

# model_version -> (the function that builds the network, the hyperparameters only it uses)
NETWORKS = {}


def network(**hyperparameters):
    """Registers a network builder under its function's name, with the hyperparameters it declares."""

    def register(builder):
        NETWORKS[builder.__name__] = (builder, hyperparameters)
        return builder

    return register


def build_network(params):
    """The network that params.model_version names, built with params."""
    return NETWORKS[params.model_version][0](params)


def declared(model_version):
    """{key: Hyperparameter} of a run of this network, and of every key params.json may hold."""
    import model.model_fn  # noqa: F401  (registers the networks)
    from model.input_fn import AUGMENTATIONS

    common = {**COMMON, **{key: hyperparameter for key, (_, hyperparameter) in AUGMENTATIONS.items()}}
    used = {**common, **NETWORKS.get(model_version, (None, {}))[1]}
    anywhere = {**common, **{key: h for _, declared in NETWORKS.values() for key, h in declared.items()}}
    return used, anywhere


class Params:
    """Hyperparameters loaded from a JSON file, as attributes.

    Example:
    ```
    params = Params(json_path)
    print(params.learning_rate)
    params.learning_rate = 0.5  # change the value of learning_rate in params
    ```
    """

    def __init__(self, json_path):
        self.update(json_path)

    def save(self, json_path):
        """Saves parameters to a JSON file (atomically)."""
        save_json(self.__dict__, json_path)

    def update(self, json_path):
        """Loads parameters from a JSON file, on top of the current ones."""
        self.__dict__.update(load_json(json_path))

    @property
    def dict(self):
        """Gives dict-like access to Params: `params.dict['learning_rate']`."""
        return self.__dict__

    def __getattr__(self, name):  # only called for a name that is not a hyperparameter of the run
        if name.startswith("_"):
            raise AttributeError(name)
        raise UserError(
            f"The code asks for the hyperparameter '{name}', which is not declared: declare it with its "
            "network in model/model_fn.py (@network(...)), or in COMMON in model/params.py."
        )

    def __contains__(self, key):
        return key in self.__dict__


def check_params(params, source):
    """Fills in the defaults, and stops with a clear message on an unknown, missing or invalid value."""
    version = params.dict.setdefault("model_version", COMMON["model_version"].default)
    used, anywhere = declared(version)
    if version not in NETWORKS:
        known = ", ".join(sorted(NETWORKS))
        raise UserError(
            f"{source}: unknown model_version {json.dumps(version)}. Known versions: {known} (in model/model_fn.py)."
        )
    for key, value in params.dict.items():
        if key not in anywhere:
            raise UserError(f"{source}: unknown hyperparameter '{key}'. {did_you_mean(key, anywhere)}{HOW_TO_DECLARE}")
        used.get(key, anywhere[key]).check(key, value, source)
    for key, hyperparameter in used.items():
        if key not in params.dict:
            if hyperparameter.default is None:
                raise UserError(
                    f"{source}: the hyperparameter '{key}' is missing. Add it, with {hyperparameter.must_be}."
                )
            params.dict[key] = hyperparameter.default


HOW_TO_DECLARE = "If it is a new one, declare it with its network in model/model_fn.py (@network(...))."


def did_you_mean(key, valid_keys):
    matches = difflib.get_close_matches(key, list(valid_keys), n=1)
    return f"Did you mean '{matches[0]}'? " if matches else ""


def apply_overrides(params, overrides):
    """Applies `--param KEY=VALUE` overrides; VALUE is read as JSON, or else kept as a string."""
    for override in overrides:
        key, has_value, text = override.partition("=")
        if not has_value:
            raise UserError(f"--param {override}: expected KEY=VALUE, such as --param learning_rate=0.01.")
        if key not in declared(None)[1]:
            raise UserError(
                f"--param {override}: '{key}' is not a hyperparameter. {did_you_mean(key, declared(None)[1])}"
            )
        try:
            params.dict[key] = json.loads(text)
        except json.JSONDecodeError:
            params.dict[key] = text  # a bare word such as adam


def load_params(model_dir, overrides=(), filename="params.json"):
    """Loads and checks MODEL_DIR/params.json, with any `--param KEY=VALUE` overrides."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError(
            f"The experiment folder {model_dir} does not exist. Create it with a params.json, "
            "for example by copying experiments/base_model."
        )
    if not (model_dir / filename).is_file():
        raise UserError(f"No {filename} in {model_dir}. Copy one from experiments/base_model and edit it.")
    params = Params(model_dir / filename)
    apply_overrides(params, overrides)
    check_params(params, f"{model_dir / filename}{' with --param overrides' if overrides else ''}")
    return params


def load_trained_params(model_dir):
    """The hyperparameters a run in model_dir trained with: params_used.json, else params.json."""
    used = Path(model_dir) / "params_used.json"
    return load_params(model_dir, filename=used.name if used.is_file() else "params.json")
