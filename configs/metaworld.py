"""MAML on Meta-World ML1 (Yu et al. 2019): one robot-arm skill, held-out goals.

`tf_maml.rl.envs.MetaWorldML1` (`pip install metaworld`, MuJoCo, through the
gymnasium bridge): a task is an object and goal position drawn from the
skill's range, hidden from the policy (as ML1's), so one inner step must
find it from rewards; tasks of the test stream are goals never trained on.
Reported: return and success rate (Meta-World's `info["success"]` at some
step of the episode) after 0..3 inner steps, against the pretrained baseline.
Settings: `reach` (reach-v3) and `push` (push-v3). As garage's MAML-TRPO ML1
examples: episodes of 150 steps, 10 trajectories a task, one inner step of
0.1, two hidden layers of 100; the meta-batch (10 tasks) and the budget
(100 meta-iterations) are small ones for a 2-core CPU. Measured at 40
(docs/results.md): reach succeeds after one step in 59.5 % of episodes
(pretrained 39.0 %); push is not learnt yet (5.0 %, pretrained 1.0 %).

  python scripts/train.py --config=configs/metaworld.py:reach --workdir=runs/metaworld_reach
  python scripts/train.py --config=configs/metaworld.py:push --workdir=runs/metaworld_push
"""

from tf_maml.runs.configs import reinforcement_config

# Setting: (Meta-World skill, meta-iterations).
SETTINGS = {"reach": ("reach-v3", 100), "push": ("push-v3", 100)}


def get_config(setting="reach"):
    if setting not in SETTINGS:
        raise ValueError(f"Unknown Meta-World setting {setting!r}; known: {sorted(SETTINGS)}.")
    skill, meta_steps = SETTINGS[setting]
    return reinforcement_config(
        "metaworld", meta_batch_size=10, inner_lr=0.1, inner_steps=1, outer_lr=1e-3,
        meta_steps=meta_steps, steps_per_epoch=10, validation_batches=1,
        eval_tasks=20, eval_max_steps=3,
        # workers: processes that step Meta-World (0: the training process); 2 samples 1.3
        # times as fast on 2 cores (docs/benchmarks.md), the same rollouts.
        env={"name": "metaworld_ml1", "env_name": skill, "horizon": 150, "workers": 2},
        policy_hidden=(100, 100), trajectories=10, discount=0.99,
    )
