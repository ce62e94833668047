"""The transfer baseline few-shot papers set beside meta-learning, in the same report.

A network is pretrained on all meta-training classes at once (plain
supervised learning, one logit per class); on each test task its body is kept
and (Chen et al., ICLR 2019, "A Closer Look at Few-shot Classification"):

- `pretrained_*`: a new head, zero at the start, fine-tuned on the support set
  by the same steps the meta-learner's evaluation takes (`config.pretrained.
  fine_tune`: "head", the body frozen with its BatchNorm moving statistics, or
  "all" layers), 0..eval_max_steps;
- `prototype_*`: nearest-prototype classification on its features, the body
  frozen (ProtoNet's classifier: `tf_maml.ProtoMAML` before any step).

Both are evaluated by `step_curves.query_results_by_step` on the meta-learner's
test tasks, as reported and as served. `workdir/pretrained.keras` keeps the
pretrained network (its training resumes from a backup if interrupted).
"""

import os
import shutil

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import tf_maml
from tf_maml import nets
from tf_maml.data.class_pool import example_scale
from tf_maml.runs import checkpoints, step_curves, tasks

FINE_TUNE = ("head", "all")


def training_examples(pool, batch_size, seed):
    """Every example of `pool` with its class index, shuffled each epoch, in batches,
    scaled as episodes scale them."""
    x = np.concatenate([pool.images[c, :n] for c, n in enumerate(pool.counts)])
    y = np.repeat(np.arange(pool.num_classes, dtype=np.int32), pool.counts)
    scale = example_scale(x.dtype)
    return (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size)
            .map(lambda x, y: (tf.cast(x, tf.float32) * scale, y))
            .prefetch(tf.data.AUTOTUNE))


def pretrained_network(config, workdir):
    """The backbone of `config` trained on all meta-training classes jointly: read from
    `workdir/pretrained.keras`, or trained (resuming a backup) and saved there."""
    path = os.path.join(workdir, "pretrained.keras")
    if os.path.exists(path):
        return checkpoints.load_model(path)
    task = tasks.task_of(config)
    settings = config.pretrained
    pool = task.training_pool(config)
    logging.info("Pretraining the baseline on %d classes (%d examples) for %d epochs.",
                 pool.num_classes, int(pool.counts.sum()), settings.epochs)
    keras.utils.set_random_seed(config.seed)
    model = task.backbone(config, num_classes=pool.num_classes)
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    backup = os.path.join(workdir, "pretrained_backup")
    model.fit(training_examples(pool, settings.batch_size, config.seed),
              epochs=settings.epochs, verbose=config.verbose,
              callbacks=[checkpoints.AtomicBackupAndRestore(backup, delete_checkpoint=False)])
    checkpoints.save_model(model, path)
    shutil.rmtree(backup, ignore_errors=True)
    return model


def check_settings(config):
    """Refuses `config.pretrained` settings the baseline cannot use, before any run."""
    settings = config.pretrained
    if settings.fine_tune not in FINE_TUNE:
        raise ValueError(f"pretrained.fine_tune must be one of {FINE_TUNE}; received "
                         f"{settings.fine_tune!r}.")
    if not hasattr(tasks.task_of(config), "training_pool"):
        raise ValueError(f"The {config.task} task has no pool of training classes for the "
                         "pretrained baseline; remove config.pretrained.")


def _compiled(meta_learner, config):
    loss, metrics = tasks.task_of(config).loss_and_metrics(config)
    meta_learner.compile(optimizer="adam", loss=loss, metrics=metrics)
    return meta_learner


def fine_tuning_learner(pretrained, config):
    """A meta-learner whose evaluation is the baseline's fine-tuning: the pretrained
    body, a new zero head of the task's ways, adapted by SGD of `pretrained.inner_lr`."""
    settings = config.pretrained
    check_settings(config)
    # Fine-tuning the head only, the body is frozen: its BatchNorm layers keep the moving
    # statistics of pretraining (Keras runs a frozen one in inference mode), as Chen et
    # al.'s baseline; fine-tuning all layers, they normalize with the support set's.
    pretrained.trainable = settings.fine_tune == "all"
    body = nets.without_head(pretrained)
    inputs = keras.Input(body.input_shape[1:])
    head = keras.layers.Dense(tasks.task_of(config).num_outputs(config),
                              kernel_initializer="zeros", name="new_head")
    model = keras.Model(inputs, head(body(inputs)), name="pretrained_fine_tuned")
    common = {"inner_lr": settings.inner_lr, "eval_inner_steps": config.eval_max_steps,
              "transductive": config.get("transductive")}
    if settings.fine_tune == "head":
        return _compiled(tf_maml.ANIL(model, adapted_layers=[head.name], **common), config)
    return _compiled(tf_maml.MAML(model, **common), config)


def prototype_learner(pretrained, config):
    """ProtoMAML on the pretrained body, frozen: before any step, nearest-prototype
    classification on the features of pretraining (moving BatchNorm statistics)."""
    pretrained.trainable = False
    return _compiled(tf_maml.ProtoMAML(
        nets.without_head(pretrained), num_classes=tasks.task_of(config).num_outputs(config),
        inner_lr=config.pretrained.inner_lr, transductive=config.get("transductive")), config)


def evaluate(config, workdir):
    """`{"pretrained": results, "prototype": results}` on the test tasks of `config`
    (results as `step_curves.query_results_by_step` gives them)."""
    pretrained = pretrained_network(config, workdir)
    out = {}
    for name, learner, steps in (("pretrained", fine_tuning_learner, config.eval_max_steps),
                                 ("prototype", prototype_learner, 0)):
        logging.info("Evaluating the %s baseline on %d test tasks.", name, config.eval_tasks)
        out[name] = step_curves.query_results_by_step(
            learner(pretrained, config), tasks.episodes(config, "test", queries=config.eval_queries),
            config.eval_tasks, steps, verbose=config.verbose)
    return out
