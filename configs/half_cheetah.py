"""MAML on the half-cheetah with a goal velocity or direction (Finn et al. 2017, section 5.3,
Figure 5).

`tf_maml.rl.envs.HalfCheetahVelocity` (MuJoCo through the gymnasium bridge:
`pip install "gymnasium[mujoco]"`): a task is a goal velocity uniform in
[0, 2]; the reward is minus the distance of the forward velocity to it, minus
0.05 |action|^2; 200 steps an episode. As the paper (and pytorch-maml-rl's
HalfCheetahVel config): one inner policy-gradient step of 0.1, 20
trajectories a task before and after, two hidden layers of 100 ReLU,
discount 0.99, GAE lambda 1 with the linear feature baseline. The paper
meta-trained 40 tasks a meta-batch for hundreds of TRPO iterations; the
default budget here is a small one for a 2-core CPU (10 tasks a meta-batch,
60 meta-iterations, ProMP's outer step: it does not yet adapt;
docs/results.md); --config.meta_batch_size=20 --config.meta_steps=300
adapts (about 2 h here: -149 before, -114 after one step, the pretrained
policy -147 after it); --config.meta_batch_size=40 --config.meta_steps=500
is the paper's.

The `:direction` setting is the paper's other half-cheetah
(`tf_maml.rl.envs.HalfCheetahDirection`): a task is forward or backward at
even odds, the reward the velocity along it minus the same control cost.

  python scripts/train.py --config=configs/half_cheetah.py --workdir=runs/half_cheetah
  python scripts/train.py --config=configs/half_cheetah.py --config.outer_update=trpo \
      --workdir=runs/half_cheetah_trpo
  python scripts/train.py --config=configs/half_cheetah.py:direction \
      --workdir=runs/half_cheetah_direction
"""

from tf_maml.runs.configs import reinforcement_config

# Setting: the environment and its settings.
# (`workers`: processes that step MuJoCo; 0 steps it in the training process.)
SETTINGS = {
    "velocity": {"name": "half_cheetah_velocity", "horizon": 200, "velocity_range": (0.0, 2.0),
                 "workers": 0},
    "direction": {"name": "half_cheetah_direction", "horizon": 200, "workers": 0},
}


def get_config(setting="velocity"):
    if setting not in SETTINGS:
        raise ValueError(f"Unknown half-cheetah setting {setting!r}; known: {sorted(SETTINGS)}.")
    return reinforcement_config(
        SETTINGS[setting]["name"], meta_batch_size=10, inner_lr=0.1, inner_steps=1,
        outer_lr=1e-3, meta_steps=60, steps_per_epoch=10, validation_batches=1,
        # Evaluation: 20 held-out tasks, returns after 0..3 inner steps.
        eval_tasks=20, eval_max_steps=3, env=SETTINGS[setting],
        policy_hidden=(100, 100), trajectories=20, discount=0.99,
    )
