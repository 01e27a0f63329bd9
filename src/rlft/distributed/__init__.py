"""Scale-out engines: Ray rollout workers, a data-parallel learner, vLLM generation.

Nothing here imports Ray, vLLM or ``torch.distributed`` process groups at ``import rlft``: each
engine imports its backend when it is built.
"""
