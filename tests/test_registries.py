"""Runs from registries: a task or a member of one's own joins scripts/train.py's path
with one registration, and no runner special-cases a task or a member by name."""

import ast
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml
import tf_maml.rl.experiment  # noqa: F401 (registers the meta-RL tasks)
from tf_maml.runs import members, tasks

from helpers import tiny_config


class Lines(tasks.SupervisedTask):
    """Regression of lines y = a x + b, a and b uniform in [-1, 1] per task."""

    name = "lines"

    def episodes(self, config, split, queries, meta_batch_size, seed, num_batches, start_batch):
        def batch(index):
            key = tf.stack([tf.cast(seed, tf.int64), index])
            slopes = tf.random.stateless_uniform([meta_batch_size, 1, 2], key, -1.0, 1.0)
            x = tf.random.stateless_uniform([meta_batch_size, config.shots + queries, 1],
                                            key + 1, -5.0, 5.0)
            y = x * slopes[..., :1] + slopes[..., 1:]
            return ((x[:, :config.shots], y[:, :config.shots]),
                    (x[:, config.shots:], y[:, config.shots:]))

        stop = start_batch + num_batches if num_batches else 2**62
        return tf.data.Dataset.range(start_batch, stop).map(batch)

    def backbone(self, config):
        return tf_maml.nets.mlp(inputs=1, hidden=tuple(config.model.hidden), outputs=1)

    def loss_and_metrics(self, config):
        return "mse", []


def test_a_registered_task_runs_through_the_scripts_path(tmp_path):
    tasks.register_task(Lines())
    try:
        config = tiny_config(task="lines", meta_steps=20, eval_tasks=10)
        report = tasks.task_of(config).run(config, str(tmp_path))
    finally:
        del tasks.TASKS["lines"]
    assert report["config"]["task"] == "lines" and report["meta_steps"] == 20
    assert len(report["loss_by_step"]) == config.eval_max_steps + 1
    assert np.all(np.isfinite(report["loss_by_step"]))
    assert os.path.exists(tmp_path / "meta.keras")


def test_every_task_and_member_is_registered_and_unknown_names_are_listed():
    assert {"sinusoid", "omniglot", "navigation", "cartpole"} <= set(tasks.TASKS)
    assert set(members.RECIPES) == set(tf_maml.family.ALGORITHMS)
    with pytest.raises(ValueError, match="Unknown task 'sinusiod'; known: .*navigation"):
        tasks.task_of(tiny_config(task="sinusiod"))
    with pytest.raises(ValueError, match="Unknown algorithm 'mamal'; known: maml, fomaml"):
        members.recipe("mamal")


def test_a_member_of_ones_own_joins_runs_with_a_recipe():
    class Doubled(tf_maml.MAML):
        """MAML whose task loss is twice the compiled one."""

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            return 2.0 * super().compute_loss(x, y, y_pred, sample_weight, training)

    members.RECIPES["doubled"] = members.Recipe(Doubled)
    try:
        config = tiny_config(algorithm="doubled")
        meta_learner = tf_maml.experiment.build_meta_learner(config)
    finally:
        del members.RECIPES["doubled"]
    assert type(meta_learner) is Doubled and meta_learner.inner_lr == config.inner_lr
    assert isinstance(meta_learner.optimizer, keras.optimizers.Adam)


def test_runners_name_no_task_and_no_member():
    """No `config.task == ...` or algorithm-name branch outside the registries."""
    root = os.path.dirname(tf_maml.__file__)
    names = set(tasks.TASKS) | set(members.RECIPES)
    found = []
    for path in ("runs/experiment.py", "runs/tuning.py", "rl/experiment.py"):
        tree = ast.parse(open(os.path.join(root, path), encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(
                    isinstance(c, ast.Constant) and c.value in names
                    for c in [node.left, *node.comparators]):
                found.append(f"{path}:{node.lineno}")
    assert not found, found
