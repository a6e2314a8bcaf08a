"""The search space of search.json: lists of values (a grid) or distributions, and the trials they give."""

import hashlib
import itertools
import json
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from model.utils.errors import UserError
from model.utils.files import load_json
from model.utils.params import declared, did_you_mean

# Characters of a trial folder's name taken from its values (file systems allow 255)
MAX_NAME = 120
# The most trials a search may plan
MAX_TRIALS = 10000

EXAMPLE = """For a grid, give a list of values per key:
    {"learning_rate": [1e-4, 1e-3, 1e-2], "batch_size": [32, 64]}
For random search (with --num_trials), give a distribution per key:
    {"learning_rate": {"distribution": "log_uniform", "low": 1e-5, "high": 1e-1},
     "num_channels": {"distribution": "int_uniform", "low": 8, "high": 32},
     "use_batch_norm": {"distribution": "choice", "values": [true, false]}}
Distributions: uniform, log_uniform, int_uniform (low and high included), choice."""


@dataclass(frozen=True)
class Distribution:
    bounds: type  # the type of low and high; None for "choice", which has "values"
    sample: Callable  # (spec, random.Random) -> a value, for random search
    suggest: Callable  # (optuna trial, key, spec) -> a value, for TPE


def four_digits(value):  # floats only: readable folder names, and no loss that matters
    return float(f"{value:.4g}") if isinstance(value, float) else value


DISTRIBUTIONS = {
    "uniform": Distribution(
        float,
        lambda spec, rng: four_digits(rng.uniform(spec["low"], spec["high"])),
        lambda trial, key, spec: trial.suggest_float(key, spec["low"], spec["high"]),
    ),
    # Uniform in the exponent: 1e-5..1e-4 is drawn as often as 1e-2..1e-1.
    "log_uniform": Distribution(
        float,
        lambda spec, rng: four_digits(10 ** rng.uniform(math.log10(spec["low"]), math.log10(spec["high"]))),
        lambda trial, key, spec: trial.suggest_float(key, spec["low"], spec["high"], log=True),
    ),
    "int_uniform": Distribution(
        int,
        lambda spec, rng: rng.randint(spec["low"], spec["high"]),
        lambda trial, key, spec: trial.suggest_int(key, spec["low"], spec["high"]),
    ),
    "choice": Distribution(
        None,
        lambda spec, rng: rng.choice(spec["values"]),
        lambda trial, key, spec: trial.suggest_categorical(key, spec["values"]),
    ),
}


def load_search_space(parent_dir, model_version):
    """PARENT_DIR/search.json, checked ({key: [values]} or {key: {"distribution": ...}}), with every
    list written as a "choice" distribution; and whether it is a grid (only lists)."""
    path = Path(parent_dir) / "search.json"
    if not path.exists():  # a file of another kind: load_json names it
        raise UserError(f"No search space: {path} is missing. Create it next to params.json.\n{EXAMPLE}")
    space = load_json(path)
    if not space:
        raise UserError(f"{path} is empty: name at least one hyperparameter to search.\n{EXAMPLE}")
    grid = all(isinstance(spec, list) for spec in space.values())
    _, hyperparameters = declared(model_version)
    versions = space["model_version"] if isinstance(space.get("model_version"), list) else [model_version]
    used = {key for version in versions if isinstance(version, str) for key in declared(version)[0]}
    for key, spec in space.items():
        if key not in hyperparameters:
            raise UserError(f"{path}: '{key}' is not a hyperparameter. {did_you_mean(key, hyperparameters)}\n{EXAMPLE}")
        if isinstance(spec, list) and not spec:
            raise UserError(f"{path}: the list of values for '{key}' is empty.\n{EXAMPLE}")
        spec = space[key] = {"distribution": "choice", "values": spec} if isinstance(spec, list) else spec
        if wrong := problem(spec):
            raise UserError(f"{path}: '{key}': {wrong}.\n{EXAMPLE}")
        for value in spec.get("values", [spec.get("low"), spec.get("high")]):
            hyperparameters[key].check(key, value, path)
        whole = (hyperparameters[key].kind or type(hyperparameters[key].default)) is int
        if DISTRIBUTIONS[spec["distribution"]].bounds is float and whole:
            raise UserError(f"{path}: '{key}' takes whole numbers: give it \"int_uniform\", or a list.\n{EXAMPLE}")
    for key in space.keys() - used:
        raise UserError(
            f"{path}: '{key}' is not used by model_version {' or '.join(map(str, versions))}, so every trial "
            "would train the same network. Remove it, or search model_version too."
        )
    return space, grid


def problem(spec):
    """What is wrong with a distribution, or None: it takes its fields only, and non-empty values or low < high."""
    kind = DISTRIBUTIONS.get(spec.get("distribution")) if isinstance(spec, dict) else None
    if kind is None:
        return f"give a list of values, or a distribution ({', '.join(DISTRIBUTIONS)}), not {json.dumps(spec)}"
    fields = {"distribution", "values"} if kind.bounds is None else {"distribution", "low", "high"}
    if set(spec) != fields:  # a field missing, or a typo that would be ignored
        extra = ", ".join(sorted(set(spec) - fields))
        return f"{spec['distribution']} takes {' and '.join(sorted(fields - {'distribution'}))}" + (
            f", not {extra}" if extra else ""
        )
    if kind.bounds is None:
        return (
            None if isinstance(spec["values"], list) and spec["values"] else "choice needs a non-empty list of values"
        )
    low, high = spec["low"], spec["high"]
    numbers = (int,) if kind.bounds is int else (int, float)
    if not all(isinstance(v, numbers) and not isinstance(v, bool) for v in (low, high)):
        return f"low and high of {spec['distribution']} must be {'whole ' if kind.bounds is int else ''}numbers"
    if not low < high:
        return f"low ({low}) must be below high ({high})"
    if spec["distribution"] == "log_uniform" and low <= 0:
        return f"low of log_uniform must be above 0, not {low}"
    return None


def grid_trials(space):
    """Every combination of the listed values, as a list of {key: value} dicts."""
    if (size := math.prod(len(spec["values"]) for spec in space.values())) > MAX_TRIALS:
        raise UserError(
            f"The grid has {size} points, more than {MAX_TRIALS}: search fewer values, or use random search."
        )
    keys = list(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[key]["values"] for key in keys))]


def random_trials(space, num_trials, seed):
    """num_trials draws from the distributions; the same seed gives the same trials."""
    rng = random.Random(seed)
    return [
        {key: DISTRIBUTIONS[s["distribution"]].sample(s, rng) for key, s in space.items()} for _ in range(num_trials)
    ]


def suggest(trial, space):
    """An Optuna trial's values for the space (the TPE search)."""
    return {key: DISTRIBUTIONS[s["distribution"]].suggest(trial, key, s) for key, s in space.items()}


def trial_name(values):
    """{'learning_rate': 0.001, 'batch_size': 64} -> 'learning_rate_0.001-batch_size_64'."""
    name = "-".join(f"{key}_{json.dumps(value)}" for key, value in values.items()).replace('"', "")
    # Only characters safe in a folder name on every OS, in a name short enough for any file system. A
    # name that had to lose more than quotes gets a digest of the values: two trials never share a folder.
    safe = re.sub(r"[^A-Za-z0-9._-]", "", name)
    if safe != name or len(safe) > MAX_NAME:
        safe = f"{safe[:MAX_NAME]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return safe
