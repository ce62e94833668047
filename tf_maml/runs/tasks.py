"""The tasks a run can meta-learn, registered by the name configs give (`config.task`).

A task says what a run of it needs from its config: its episodes, the
backbone network, the loss and metrics, its extra figures, and the runner
that trains and evaluates it (`run`). `scripts/train.py` looks the config's
task up here, so a new task is a `register_task(...)` away, with no change
to the runners or the scripts. Supervised tasks (sinusoid, Omniglot, spoken words) are
defined here; `tf_maml.rl.experiment` registers the meta-RL ones.
"""

import functools
import os

import keras

from tf_maml import data, nets
from tf_maml.runs import checkpoints, plots

TASKS = {}

# Each split draws from its own seed stream.
_SPLIT_SEED_OFFSETS = {"train": 0, "validation": 1, "test": 2, "plots": 3}


def register_task(task):
    """Makes `task` (with a `name` and a `run(config, workdir, allow_config_change)`)
    the one configs name `task.name`."""
    TASKS[task.name] = task
    return task


def task_of(config):
    """The registered task `config.task` names, or an error listing the known ones."""
    if config.task not in TASKS:
        raise ValueError(f"Unknown task {config.task!r}; known: {', '.join(sorted(TASKS))}.")
    return TASKS[config.task]


class SupervisedTask:
    """A task of episodes, meta-trained by `tf_maml.runs.experiment.run`."""

    name = None
    loss_label = "query loss"

    def check(self, config):
        """Refuses a config this task cannot run, before any compute."""

    def episodes(self, config, split, **common):
        """The episode pipeline of `split`; `common`: `queries`, `meta_batch_size`,
        `seed`, `num_batches`, `start_batch`."""
        raise NotImplementedError

    def backbone(self, config):
        """A fresh network for the config."""
        raise NotImplementedError

    def loss_and_metrics(self, config):
        """`(loss, metrics)` for `compile`."""
        raise NotImplementedError

    def figures(self, meta_learner, config, workdir):
        """Figures of this task beyond the results by step."""

    def setting(self, config):
        """The task and its setting in a few words, for figure titles."""
        return self.name

    def run(self, config, workdir, allow_config_change=False):
        from tf_maml.runs import experiment  # noqa: PLC0415 (experiment reads this registry)

        return experiment.run(config, workdir, allow_config_change)


def episodes(config, split, num_batches=None, start_batch=0, queries=None):
    """The episode pipeline of `config.task` for `split` ("train", "validation", "test",
    "plots"), each split from its own seed."""
    task = task_of(config)
    task.check(config)
    return task.episodes(
        config, split, queries=queries or config.queries,
        meta_batch_size=config.meta_batch_size,
        seed=config.seed * 10 + _SPLIT_SEED_OFFSETS[split],
        num_batches=num_batches, start_batch=start_batch,
    )


class Sinusoid(SupervisedTask):
    """Sinusoid regression (Finn et al., 2017, section 5.1)."""

    name = "sinusoid"
    loss_label = "query MSE"

    def episodes(self, config, split, **common):
        return data.sinusoid_episodes(shots=config.shots, **common)

    def backbone(self, config):
        return nets.mlp(inputs=1, hidden=tuple(config.model.hidden), outputs=1,
                        context=config.model.get("context", 0))

    def loss_and_metrics(self, config):
        return "mse", []

    def setting(self, config):
        return f"sinusoid regression, {config.shots}-shot"

    def figures(self, meta_learner, config, workdir):
        title = plots.run_title(self.setting(config),
                                int(meta_learner.optimizer.iterations.numpy()),
                                type(meta_learner).__name__)
        plots.plot_sinusoid_fits(
            meta_learner, episodes(config, "plots", num_batches=1, queries=100),
            os.path.join(workdir, "sinusoid_fits.png"), title=title)


register_task(Sinusoid())
SAMPLERS = ("fixed", "variable")


class FewShotClassification(SupervisedTask):
    """Classification episodes of N ways and K shots, or of variable ways and shots
    (`config.sampler`), on a pool of classes."""

    def check(self, config):
        sampler = config.get("sampler", "fixed")
        if sampler not in SAMPLERS:
            raise ValueError(f"Unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}.")

    def episodes_of_pool(self, config, pool, **common):
        """The episodes `config.sampler` draws from `pool` (no rotations)."""
        if config.get("sampler", "fixed") == "variable":
            # Meta-Dataset's episodes of variable ways and shots, padded (weighted).
            variable = config.variable
            return data.variable_episodes(
                pool, min_ways=variable.min_ways, max_ways=variable.max_ways,
                max_support=variable.max_support, **common)
        return data.few_shot_episodes(pool, ways=config.ways, shots=config.shots, **common)

    def describe(self, config, data_name):
        if config.get("sampler", "fixed") == "variable":
            return (f"{data_name}, {config.variable.min_ways} to {config.variable.max_ways} "
                    "ways, variable shots")
        return f"{data_name} {config.ways}-way {config.shots}-shot"

    @staticmethod
    def num_outputs(config):
        """Logits of the classifier: the most classes an episode of `config` has."""
        if config.get("sampler", "fixed") == "variable":
            return config.variable.max_ways
        return config.ways

    def loss_and_metrics(self, config):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"]


class Omniglot(FewShotClassification):
    """Few-shot classification of Omniglot characters, fixed or variable ways and shots."""

    name = "omniglot"

    def check(self, config):
        super().check(config)
        if config.get("sampler", "fixed") == "variable" and config.rotation:
            raise ValueError("The variable sampler draws classes as Meta-Dataset does, without "
                             f"rotations; set --config.rotation='' (it is {config.rotation!r}).")

    def episodes(self, config, split, **common):
        split = "test" if split == "plots" else split
        if config.get("sampler", "fixed") == "variable":
            pool, characters = data.load_omniglot(config.data_dir or None)
            return self.episodes_of_pool(
                config, data.omniglot_split(pool, characters, split, config.protocol), **common)
        return data.omniglot_episodes(
            split, ways=config.ways, shots=config.shots, data_dir=config.data_dir or None,
            protocol=config.protocol, rotation=config.rotation or None, **common,
        )

    def setting(self, config):
        return self.describe(config, "Omniglot")

    def backbone(self, config, num_classes=None):
        return nets.conv4(
            num_classes or self.num_outputs(config), filters=config.model.filters,
            downsample=config.model.downsample,
            normalization=config.model.get("normalization", "batch"),
            context=config.model.get("context", 0),
        )


register_task(Omniglot())


class SpokenWords(FewShotClassification):
    """Few-shot recognition of spoken words from waveforms (the corpus of
    `scripts/make_spoken_words.py`): background words meta-train, validation words
    validate, evaluation words test."""

    name = "spoken_words"
    FOLDERS = {"train": "background", "validation": "validation", "test": "evaluation",
               "plots": "evaluation"}

    def check(self, config):
        super().check(config)
        manifest = os.path.join(config.data_dir, "manifest.json") if config.data_dir else ""
        if not manifest or not os.path.exists(manifest):
            raise ValueError(
                f"--config.data_dir ({config.data_dir!r}) must be a spoken-words corpus (a "
                "folder with manifest.json); make one with `python scripts/make_spoken_words.py "
                "--out=DIR`, then pass --config.data_dir=DIR.")
        voices = len(checkpoints.read_json(manifest)["speakers"])
        if not 0 <= config.held_out_voices < voices:
            raise ValueError(f"held_out_voices must be in 0..{voices - 1} (the corpus has "
                             f"{voices} speakers); received {config.held_out_voices}.")

    def pool(self, config, split):
        """The recordings of `split`'s words, without the held-out speakers in meta-training
        and validation, of them alone at test."""
        pool = _spoken_words_pool(config.data_dir, self.FOLDERS[split], config.sample_rate,
                                  config.duration)
        held_out = config.held_out_voices
        if not held_out:
            return pool
        if len(set(pool.counts)) != 1:
            raise ValueError("held_out_voices needs every word spoken by every speaker; "
                             f"{config.data_dir} holds words of unequal counts.")
        # File names start with the speaker's index: example j is speaker j.
        voices = pool.images.shape[1]
        tested = split in ("test", "plots")
        keep = slice(voices - held_out, voices) if tested else slice(0, voices - held_out)
        return data.ClassPool(pool.images[:, keep], class_ids=pool.class_ids)

    def training_pool(self, config):
        """The meta-training recordings, which the pretrained baseline learns jointly."""
        return self.pool(config, "train")

    def episodes(self, config, split, **common):
        return self.episodes_of_pool(config, self.pool(config, split), **common)

    def setting(self, config):
        return self.describe(config, "spoken words")

    def backbone(self, config, num_classes=None):
        model = config.model
        # SpecAugment only where it masks something (its widths alone mask nothing).
        masks = model.augment.frequency_masks or model.augment.time_masks
        return nets.keyword_convnet(
            num_classes or self.num_outputs(config), sample_rate=config.sample_rate,
            duration=config.duration, num_mel_bins=model.num_mel_bins,
            frame_length=model.frame_length, frame_step=model.frame_step,
            filters=model.filters, normalization=model.normalization, context=model.context,
            augment=dict(model.augment) if masks else None)


@functools.lru_cache(maxsize=4)
def _spoken_words_pool(data_dir, folder, sample_rate, duration):
    """The recordings of one split of a corpus, read once per process."""
    return data.ClassPool.from_audio_directory(os.path.join(data_dir, folder),
                                               sample_rate=sample_rate, duration=duration)


register_task(SpokenWords())
