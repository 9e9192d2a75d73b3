"""On-policy RL for code: GRPO, RLOO and PPO with execution rewards.

Modules: `algorithms` (one record of functions per algorithm, looked up by name), `loop` (the
RL loop shared by all of them, on the run scaffold), `rollout` (the rollout batch layout and
RewardSpec), `rewards` (reward functions registered by name: unit tests in the sandbox, syntax,
bandit, format), `reward_model` (a trained reward model as a reward), `prompts` (prompt rows),
`environments` (a small verifiable coding problem set). The jobs are in codejax/jobs/rl.py;
preference optimisation (reward models, DPO) lives in codejax/objectives and codejax/data/pairs.py.
"""
