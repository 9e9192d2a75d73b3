"""Model-aware loss builders: each returns `loss_fn(variables, batch, rng) -> (loss_sum, weight_sum[, sums])`.

    lm       next-token cross-entropy (pretrain, sft)
    reward   the scalar score head and the Bradley-Terry loss (reward)
    dpo      the DPO family and its reference (dpo)
    policy   clipped policy-gradient losses over rollouts (grpo, rloo, ppo)

`variables` names the collections a run holds and gives the policy and reference views.
The array math itself is in codejax.losses; these wire it to the model and the batches.
"""
