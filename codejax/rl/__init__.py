"""Preference optimisation and RL for code: reward models, the DPO family, PPO, GRPO/RLOO.

Modules: `preference_data` (pairs -> pair batches), `reward_model` (scalar head, Bradley-Terry),
`dpo` (the DPO-family loss function and its reference model), `rewards` (reward functions
registered by name: unit tests in the sandbox, syntax, bandit, format), `tasks` (a small
verifiable coding task), `rollout` / `trainer` (sampling, scoring and the GRPO/RLOO/PPO loop).
The jobs are in codejax/jobs/preference.py (reward, dpo) and codejax/jobs/rl.py (grpo, ppo).
"""
