"""Whether a config fits: the run's recorded config, the meta-learner file, the command line.

A workdir's `config.json` records the config it was trained with; a config
that differs in a field that changes what is trained is refused, naming the
fields (`check_config`). A meta-learner file without its workdir is compared
with the meta-learner the config builds (`file_differences`). An override of
a field the config lacks (`--config.nonexistent=1`) is named in one line,
with the closest fields (`parse_flags`, absl's flag parser for the scripts).
"""

import difflib
import os
import runpy
import sys

from absl import app, logging

from tf_maml.runs import checkpoints


# Fields that change nothing a run trains: how it reports, where the data is, how many
# processes step a simulator (the same rollouts).
HARMLESS_FIELDS = frozenset({
    "verbose", "data_dir", "steps_per_execution", "jit_compile", "validation_batches",
    "eval_tasks", "eval_max_steps", "eval_queries", "eval_inner_steps", "env.workers",
})

# Fields that only shape training: evaluating a run's meta.keras takes them from the
# run's config.json whatever the config says (the README trains at one budget and
# evaluates with the config file's). The seed is one: the run's test tasks.
TRAINING_FIELDS = frozenset({
    "meta_steps", "steps_per_epoch", "outer_lr", "meta_batch_size", "first_order",
    "inner_steps", "queries", "reptile", "dtype_policy", "seed", "outer_update", "max_kl",
})

# Fields added to the configs after runs were recorded without them, with the
# value that trains as those runs did: such a run resumes under the new config.
ADDED_FIELDS = {"model.normalization": "batch", "sampler": "fixed", "variable.min_ways": 5,
                "variable.max_ways": 20, "variable.max_support": 100, "model.context": 0,
                "imaml.proximal_weight": 2.0, "imaml.cg_steps": 5, "proto_maml.head_only": False,
                "outer_update": "ppo", "max_kl": 0.01}


class ConfigMismatchError(ValueError):
    """A workdir was trained with another config than the one given."""


def flat_config(config, prefix=""):
    items = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            items.update(flat_config(value, f"{prefix}{key}."))
        else:
            items[prefix + key] = list(value) if isinstance(value, tuple) else value
    return items


def config_differences(recorded, config):
    """Fields (dotted names) where `config` differs from `recorded` and matters.

    `recorded` is a config as config.json holds it: flat, with dotted names.
    """
    new = flat_config(config)
    old = {**{k: v for k, v in ADDED_FIELDS.items() if k in new}, **recorded}
    return sorted(
        key for key in old.keys() | new.keys()
        if key.split(".")[0] not in HARMLESS_FIELDS and key not in HARMLESS_FIELDS
        and old.get(key) != new.get(key)
    )


def evaluation_config(config, recorded):
    """`(config, followed)`: `config` with its training fields (`TRAINING_FIELDS`) set to
    the run's `recorded` values (config.json, flat), and the dotted names of those that
    differed. What is left to differ changes what is
    evaluated; `check_meta_learner_matches` refuses it."""
    config = config.copy_and_resolve_references()
    current, followed = flat_config(config), []
    for key in sorted(recorded):
        top = key.split(".")[0]
        if top in TRAINING_FIELDS and key in current \
                and recorded[key] != current[key]:
            holder = config
            for part in key.split(".")[:-1]:
                holder = holder[part]
            holder[key.split(".")[-1]] = recorded[key]
            followed.append(key)
    return config, followed


def check_config(config, workdir, finished, allow_config_change):
    """Refuses a config that differs from the one `workdir` was trained with."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        if not finished:
            checkpoints.write_json(path, flat_config(config))
        return
    recorded, current = checkpoints.read_json(path), flat_config(config)
    changed = config_differences(recorded, config)
    if not changed or allow_config_change:
        if changed:
            logging.warning("Config differs from %s in %s; going on as asked.", path, changed)
            if not finished:  # the run goes on with this config: record it
                checkpoints.write_json(path, current)
        return
    listing = ", ".join(f"{k}: {recorded.get(k)!r} -> {current.get(k)!r}" for k in changed)
    if finished and changed == ["meta_steps"]:
        raise ConfigMismatchError(
            f"{workdir} holds a finished run of {recorded['meta_steps']} meta-steps; the "
            f"config asks for {config.meta_steps}. A finished run is not extended: train in "
            "a new workdir, or pass --allow_config_change to re-evaluate this run as it is."
        )
    state, consequence = (
        ("a finished", "its report would not describe this config") if finished
        else ("an interrupted", "resuming would mix hyper-parameters")
    )
    raise ConfigMismatchError(
        f"{workdir} holds {state} run trained with another config ({path}): {listing}; "
        f"{consequence}. Use a new workdir, set the fields back, or pass "
        "--allow_config_change to go on anyway."
    )


# The meta-learner's constructor arguments that change nothing it evaluates.
_UNEVALUATED = frozenset({"name", "trainable", "dtype", "eval_inner_steps", "task_loop",
                          "parallel_tasks", "recompute_inner_steps", "fused_batch_norm"})


def file_differences(meta_learner, reference):
    """What a meta-learner file holds that the config's own meta-learner (`reference`,
    built from the config) does not: hyper-parameters, then the model's weights' shapes."""
    held, wanted = meta_learner.get_config(), reference.get_config()
    model_key = type(meta_learner).model_argument
    problems = [
        f"{key}: the file holds {held.get(key)!r}, the config gives {wanted.get(key)!r}"
        for key in sorted(held.keys() | wanted.keys())
        if key not in _UNEVALUATED | {model_key} and held.get(key) != wanted.get(key)
    ]
    if not problems:  # the model only when the config's is comparable: built as the file's
        if not reference.built:
            reference.build((None,) + tuple(meta_learner.example_shape))
        shapes = [(w.path, tuple(w.shape)) for w in getattr(meta_learner, model_key).weights]
        config_shapes = [tuple(w.shape) for w in getattr(reference, model_key).weights]
        if [shape for _, shape in shapes] != config_shapes:
            first = next((i for i, (a, b) in enumerate(zip(shapes, config_shapes))
                          if a[1] != b), min(len(shapes), len(config_shapes)))
            problems.append(
                f"{model_key}: the file's has {len(shapes)} weights, the config's "
                f"{len(config_shapes)}; " + (
                    f"weight {first} ({shapes[first][0]}) is {shapes[first][1]} in the file, "
                    f"{config_shapes[first]} for the config" if first < min(
                        len(shapes), len(config_shapes)) else "the rest match"))
    return problems


def parse_flags(argv):
    """absl's flag parsing (as `app.run` does it), with an override of a field the config
    lacks refused in one line naming it and the closest fields, not a KeyError traceback."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError):
        unknown = _unknown_override(argv)
        if unknown is None:
            raise
        name, spec, fields = unknown
        close = difflib.get_close_matches(name, fields, n=3, cutoff=0.6)
        sys.exit(f"{os.path.basename(argv[0])}: --config.{name}: {spec} has no field {name!r}"
                 + (f"; did you mean {' or '.join(close)}?" if close else "")
                 + f" (its {len(fields)} fields: {', '.join(fields)}).")


def _unknown_override(argv):
    """`(field, config spec, fields)` of the first `--config.<field>` override the config
    file (`--config=path[:argument]`) lacks, or None."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None:
        return None
    path, _, argument = spec.partition(":")
    try:
        get_config = runpy.run_path(path)["get_config"]
        config = get_config(argument) if argument else get_config()
    except Exception:  # noqa: BLE001 (the flag parser's own error says more)
        return None
    fields = sorted(flat_config(config))
    for arg in argv:
        if arg.startswith("--config.") or arg.startswith("--noconfig."):
            name = arg.split("=", 1)[0].split("config.", 1)[1]
            if name not in fields and not any(f.startswith(name + ".") for f in fields):
                return name, spec, fields
    return None
