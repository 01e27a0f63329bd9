"""Pure RL math: tensors and numbers in, tensors out. No config objects, no I/O, no state.

Glossary (shapes; B = sequences in the batch, T = completion length):
  logprobs        (B, T)  log pi_theta(token) under the policy being optimised
  old_logprobs    (B, T)  the same under the policy that sampled the batch
  ref_logprobs    (B, T)  the same under the frozen reference model
  completion_mask (B, T)  1.0 on completion tokens that count (up to and including EOS), else 0.0
  token_rewards   (B, T)  reward given at each completion token (outcome rewards sit on the last one)
  advantages      (B, T)  how much better each token's action was than expected
  returns         (B, T)  regression targets for a critic
"""
