"""MAML driving in new traffic: highway-env's highway as tasks (Leurent 2018).

`tf_maml.rl.envs.HighwayTraffic` (`pip install highway-env`, through the
gymnasium bridge): a task is the traffic: its density (0.5 to 2), the
number of lanes (2 to 4), the other drivers' time headway (0.5 to 2.5 s)
and lane-change politeness (0 to 1); episodes of 30 decisions (one a
second) among 5 meta-actions, highway-env's reward (speed, right lane,
crashes end the episode). The policy adapts to new traffic from 10
episodes (one policy-gradient step of 0.1), against the policy trained on
all traffic jointly. highway-env simulates in Python, the slowest of the
bridged environments (docs/rl.md): the default budget (10 tasks a
meta-batch, 30 meta-iterations, about 70 minutes with the baseline and
the evaluation on 2 cores) is a small one, at which MAML does not yet
adapt: 12.6 before and 13.0 after one step against the pretrained
policy's 13.5 and 13.5, of at most 30 (docs/results.md).

  python scripts/train.py --config=configs/highway.py --workdir=runs/highway
"""

from tf_maml.runs.configs import reinforcement_config


def get_config():
    return reinforcement_config(
        "highway", meta_batch_size=10, inner_lr=0.1, inner_steps=1, outer_lr=1e-3,
        meta_steps=30, steps_per_epoch=5, validation_batches=1,
        eval_tasks=20, eval_max_steps=3,
        # workers: processes that step highway-env (0: the training process); 2 samples
        # 1.6 times as fast on 2 cores (docs/benchmarks.md), the same rollouts.
        env={"name": "highway_traffic", "horizon": 30, "workers": 2},
        policy_hidden=(64, 64), trajectories=10, discount=0.99,
    )
