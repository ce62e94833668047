"""MAML on 2D navigation (Finn et al. 2017, section 5.3), with tf_maml.rl.

As the paper and pytorch-maml-rl's 2DNavigation-v0 config: goals uniform in
[-0.5, 0.5]^2, horizon 100, 20 tasks a meta-batch, 20 trajectories a task
before and after adaptation, one inner policy-gradient step of 0.1, a
policy of two hidden layers of 100 ReLU units, the linear feature baseline,
discount 0.99. Outer update: ProMP's (Rothfuss et al. 2019): Adam 1e-3,
5 PPO-clip steps (clip 0.3) a meta-iteration, the low-variance curvature
objective ("lvc"; or "unbiased"); or the paper's, TRPO with a KL bound of
0.01 (--config.outer_update=trpo). The paper ran 500 iterations;
`meta_steps` counts meta-iterations.

  python scripts/train.py --config=configs/navigation.py --workdir=runs/navigation
  python scripts/train.py --config=configs/navigation.py --config.outer_update=trpo \
      --workdir=runs/navigation_trpo

Other environments: --config.task=cartpole --config.env.name=cartpole
(`tf_maml.rl.experiment.ENVIRONMENTS` lists them; config.env holds their
arguments).
"""

from tf_maml.runs.configs import reinforcement_config


def get_config():
    # The progress bar (verbose=1): Keras' one line per epoch (verbose=2) prints negative
    # values such as returns in exponent form (-5.0410e+01; Keras 3.15 tests `avg > 1e-3`).
    return reinforcement_config(
        "navigation", meta_batch_size=20, inner_lr=0.1, inner_steps=1, outer_lr=1e-3,
        meta_steps=500, steps_per_epoch=25, validation_batches=1,
        # Evaluation: 40 held-out tasks, returns after 0..3 inner steps.
        eval_tasks=40, eval_max_steps=3,
        env={"name": "navigation2d", "horizon": 100, "goal_range": 0.5},
        policy_hidden=(100, 100), trajectories=20, discount=0.99,
    )
