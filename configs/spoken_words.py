"""Few-shot spoken-word recognition: tasks of words never heard in meta-training.

Make the corpus once (espeak-ng, a Debian package), then meta-train:
  python scripts/make_spoken_words.py --out=DIR
  python scripts/train.py --config=configs/spoken_words.py:5w1s --config.data_dir=DIR \
      --workdir=runs/spoken_words_5w1s
Settings: 5w1s, 5w5s, and variable (Meta-Dataset's sampler, 5 to 10 ways, up to
50 support recordings, 5 queries per class). Background words meta-train,
validation words validate, evaluation words test; `held_out_voices` keeps the
corpus' last speakers out of meta-training and tests on them alone (new speakers).
"""

import ml_collections

from tf_maml.runs.configs import supervised_config

# ways, shots (one inner step of 0.1 in meta-training: 0.4, Omniglot's, overshoots on
# log-mels at the start, where a step took the query loss from 1.6 to 24).
SETTINGS = {"5w1s": (5, 1), "5w5s": (5, 5)}


def get_config(setting="5w1s"):
    if setting == "variable":
        return variable_config()
    if setting not in SETTINGS:
        raise ValueError(f"Unknown spoken-words setting {setting!r}; choose from "
                         f"{sorted(SETTINGS) + ['variable']}.")
    ways, shots = SETTINGS[setting]
    config = supervised_config(
        "spoken_words",
        # Episodes: 5 queries per word in meta-training, 15 at test (the papers' protocol).
        shots=shots, queries=5, meta_batch_size=16,
        inner_lr=0.1, inner_steps=1, eval_inner_steps=10,
        reptile={"inner_lr": 0.001, "inner_steps": 5, "inner_optimizer": "adam", "epsilon": 1.0},
        # Outer loop: Adam 1e-3; a budget that fits a 2-core CPU.
        outer_lr=1e-3, meta_steps=2_000, steps_per_epoch=200, validation_batches=10,
        steps_per_execution=1,
        # Evaluation: 600 tasks of evaluation words, accuracy after 0..10 inner steps.
        eval_tasks=600, eval_max_steps=10, eval_queries=15,
    )
    config.ways = ways
    # The corpus made by scripts/make_spoken_words.py (required).
    config.data_dir = ""
    # Seconds kept of each recording (the corpus' words last 0.47 s in the median, one of
    # 13,920 more than 1 s) and its rate.
    config.duration = 1.0
    config.sample_rate = 16000
    # The corpus' last `held_out_voices` speakers: out of meta-training and validation;
    # test tasks are spoken by them alone. 0: every speaker everywhere.
    config.held_out_voices = 0
    config.sampler = "fixed"
    config.variable = ml_collections.ConfigDict(
        {"min_ways": 5, "max_ways": 10, "max_support": 50})
    # Log-mel front end (keras.layers.MelSpectrogram: 40 bands, 25 ms windows every
    # 20 ms, so 51 frames a second) and conv4's blocks of 32 filters on it (10 ms
    # frames and 64 filters cost 5 times the meta-step);
    # `augment`: SpecAugment's masks in training ({} none), e.g.
    # --config.model.augment.time_masks=2; `context`: CAVIA's channels.
    config.model = ml_collections.ConfigDict({
        "num_mel_bins": 40, "frame_length": 0.025, "frame_step": 0.02, "filters": 32,
        "normalization": "batch", "context": 0,
        "augment": {"frequency_masks": 0, "max_frequency_width": 8,
                    "time_masks": 0, "max_time_width": 10},
    })
    config.transductive = ml_collections.config_dict.placeholder(bool)
    # The transfer baseline in the same report (tf_maml.runs.pretrained_baseline): the
    # backbone trained on all background words jointly (Adam), then per test task a new
    # head fine-tuned on the support set by SGD of inner_lr ("head": the body frozen;
    # "all": every layer), and nearest-prototype classification on its features.
    # inner_lr 0.5: the best after 10 steps of 0.1, 0.5, 2 and 8 on validation words.
    config.pretrained = ml_collections.ConfigDict({
        "epochs": 10, "batch_size": 64, "learning_rate": 1e-3, "fine_tune": "head",
        "inner_lr": 0.5})
    return config


def variable_config():
    """Variable ways and shots on unseen words: 5 to 10 words a task, up to 50 support
    recordings, 5 queries each; 10 logits; 4 tasks a meta-batch."""
    config = get_config("5w1s")
    config.sampler = "variable"
    config.queries = config.eval_queries = 5
    config.meta_batch_size = 4
    return config
