"""Game AI that adapts to its opponent: rock-paper-scissors against reactive opponents.

`tf_maml.rl.envs.MatrixGameOpponents`: a task is an opponent, a mixed
strategy for the first round and for each action the agent took the round
before (each row drawn from a Dirichlet of concentration 0.3: opponents
with habits, such as favouring a move, answering the agent's last move with
what beats it, or copying it); a match is 20 rounds, the return its score
(+1 a win, -1 a loss). The policy sees both players' last moves. MAML
meta-trains it to adapt after 10 matches against a new opponent (one
policy-gradient step of 1.0; 0.5 and 2.0 adapted less in 300-iteration
probes), 500 meta-iterations, against the policy trained on all opponents jointly
(the "pretrained" baseline) and the exact best response to each opponent.

  python scripts/train.py --config=configs/opponents.py --workdir=runs/opponents
"""

from tf_maml.runs.configs import reinforcement_config


def get_config():
    return reinforcement_config(
        "opponents", meta_batch_size=20, inner_lr=1.0, inner_steps=1, outer_lr=1e-3,
        meta_steps=500, steps_per_epoch=25, validation_batches=1,
        eval_tasks=40, eval_max_steps=3,
        env={"name": "matrix_game_opponents", "horizon": 20, "concentration": 0.3},
        policy_hidden=(64, 64),
        trajectories=10,  # matches against each opponent before and after adapting
        discount=1.0,  # the match's score
    )
