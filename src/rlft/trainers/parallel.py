"""Several processes, one learner: data-parallel (``ddp``) and sharded (``fsdp``) RL updates.

``torchrun --nproc_per_node N -m rlft train RECIPE.yaml`` starts N copies of ``rlft train``; each
learns which rank it is from torchrun's environment (:func:`init_ranks`). A step then goes:

1. every rank draws the same prompts (the step's generator), samples its contiguous share of the
   batch's rows with the whole batch's sampling noise (``noise_rows``), so the union of the shares
   is exactly the one-process batch, and scores its share (reward, reference and old log-probs);
2. the shares are gathered (:meth:`Ranks.gather`), so every rank holds the whole scored batch and
   computes the same advantages (batch-wide statistics included) and the same mini-batch order;
3. each rank runs its share of every mini-batch's micro-batches, each loss normalised by the whole
   mini-batch's token count; the gradients are summed across ranks (``ddp``: one all-reduce per
   mini-batch; ``fsdp``: FSDP2's reduce-scatter with a sum), so the update is the one-process
   update to float rounding, and every rank takes the same optimiser step.

With ``fsdp`` (FSDP2, ``torch.distributed.fsdp.fully_shard``) each rank holds 1/N of the
parameters, gradients and optimiser state of the policy (and critic), and the reference model is
sharded too. Generation needs whole weights: they are gathered into a plain copy of the policy
before each step's sampling and evaluation (:meth:`Parallel.sampling_policy`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from rlft.errors import ConfigError
from rlft.models.device import to_device
from rlft.rollout.engine import LocalSampler
from rlft.trainers.batch import Learner, RowScores
from rlft.types import Rollout


@dataclass
class Ranks:
    """This process's place among the learner's processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    mode: str = "single"
    """single (no process group), ddp or fsdp."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    """The run's device (``train.device``, resolved): every model and batch of this process lives there."""
    mesh: Any = None
    """The device mesh of the ranks (fsdp shards over it); None in one process."""

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run folder (metrics, samples, audit log, summary, final model)."""
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.mode != "single"

    def share(self, rows: int) -> tuple[int, int]:
        """This rank's contiguous share ``[lo, hi)`` of ``rows`` rows (a multiple of the world)."""
        assert rows % self.world == 0, f"{rows} rows do not split over {self.world} ranks"
        size = rows // self.world
        return self.rank * size, (self.rank + 1) * size

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (pickled: for small things). Tensors travel through
        the CPU and arrive there: an unpickled CUDA tensor would land on the GPU of the rank that
        sent it."""
        if not self.several:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, to_device(obj, torch.device("cpu")))
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.several:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_true(self, flag: bool) -> bool:
        return all(self.gather(bool(flag)))

    def sum_floats(self, values: dict[str, float]) -> dict[str, float]:
        """Key-wise sums over ranks (every rank has the same keys)."""
        if not self.several or not values:
            return values
        keys = sorted(values)
        # On the run's device: NCCL reduces CUDA tensors only (gloo, the CPU's, takes CPU ones).
        total = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return dict(zip(keys, total.tolist(), strict=True))

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (it may write files), then the others (which may read them)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def barrier(self) -> None:
        if self.several:
            dist.barrier()

    def close(self) -> None:
        """End the process group once every rank is done (gloo may abort a process that exits
        with the group still open while another rank is using it)."""
        if self.several and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def sum_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """ddp: sum each gradient over ranks (fsdp reduces its own), in flattened buckets of about
        32 MiB: few collectives, and never a second copy of all the gradients at once."""
        if self.mode != "ddp":
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        bucket: list[torch.Tensor] = []
        for index, p in enumerate(params):
            bucket.append(p.grad)
            if sum(g.numel() * g.element_size() for g in bucket) >= BUCKET_BYTES or index == len(params) - 1:
                flat = torch.cat([g.reshape(-1) for g in bucket])
                dist.all_reduce(flat)
                offset = 0
                for g in bucket:
                    g.copy_(flat[offset : offset + g.numel()].view_as(g))
                    offset += g.numel()
                bucket = []


BUCKET_BYTES = 32 * 2**20


def init_ranks(parallel: str, device: torch.device | None = None) -> Ranks:
    """The ranks of this process on ``device`` (the run's, resolved; the CPU when None): from
    torchrun's environment (``WORLD_SIZE``, ``RANK``), with NCCL when the device is a GPU (after
    ``torch.cuda.set_device``, so that NCCL and the object collectives use this rank's GPU) and
    gloo on the CPU, and a one-dimensional device mesh over the ranks for ``fully_shard``. One
    process (no ``WORLD_SIZE``) is rank 0 of 1 and opens no process group."""
    device = device or torch.device("cpu")
    if "WORLD_SIZE" not in os.environ:
        return Ranks(device=device)
    release_large_frees()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", **({"device_id": device} if cuda else {}))
    from torch.distributed.device_mesh import init_device_mesh

    world = dist.get_world_size()
    mesh = init_device_mesh(device.type, (world,))
    return Ranks(dist.get_rank(), world, parallel, device, mesh)


def release_large_frees() -> None:
    """Make glibc return every freed block over 64 KiB to the system (mallopt M_MMAP_THRESHOLD).

    Sharded training gathers and frees whole layers many times a step; glibc's default raises its
    mmap threshold after such frees and then keeps the freed memory in its heap, so a rank's
    resident memory grew by about one model copy per step (85M parameters, 2 fsdp ranks: 3.1 GiB
    peak instead of 1.5 GiB, benchmarks/data_parallel.py). Not glibc: nothing to do."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # -3: M_MMAP_THRESHOLD


def check_parallel_recipe(config: Any, ranks: Ranks) -> None:
    """Refuse what cannot split over ``ranks``, naming the fix."""
    from rlft.config.vllm import check_vllm_ranks

    check_vllm_ranks(config, ranks.world)
    if not ranks.several:
        return
    if config.rollout.async_.enabled and config.rollout.async_.max_staleness > 0:
        raise ConfigError(
            f"rollout.async runs in one learner process for now ({ranks.world} ranks would each need a producer "
            "sampling their share ahead). Train in one process, or set rollout.async.enabled: false."
        )
    train, algo = config.train, config.algorithm
    unit = ranks.world * algo.group_size
    if train.batch_size % unit:
        raise ConfigError(
            f"train.batch_size={train.batch_size} does not split into whole groups over {ranks.world} ranks: it "
            f"must be a multiple of ranks x algorithm.group_size = {unit}. Set train.batch_size to a multiple of {unit}."
        )
    if train.mini_batch_size % ranks.world or (train.mini_batch_size // ranks.world) % train.micro_batch_size:
        raise ConfigError(
            f"train.mini_batch_size={train.mini_batch_size} must split into {ranks.world} equal shares, each a "
            f"multiple of train.micro_batch_size={train.micro_batch_size} (every rank runs as many micro-batches). "
            "Set train.micro_batch_size to a divisor of mini_batch_size / ranks."
        )
    if config.algorithm.dynamic_sampling:
        raise ConfigError(
            "algorithm.dynamic_sampling runs in one process for now (ranks would keep different groups). Set "
            "algorithm.dynamic_sampling: false, or train in one process."
        )
    if ranks.mode == "fsdp":
        clashes = [name for name, on in (("rollout.backend: vllm", config.rollout.backend == "vllm"),
                                         ("rollout.dtype: bfloat16", config.rollout.dtype == "bfloat16"),
                                         ("lora.r > 0", config.lora.r > 0),
                                         ("rollout.compile", config.rollout.compile)) if on]
        if clashes:
            raise ConfigError(
                f"train.parallel: fsdp cannot be combined with {', '.join(clashes)} yet. Use train.parallel: ddp "
                "(every rank holds the whole model), or drop them."
            )


SMALL_FOR_FSDP = 100_000_000
"""Below this many parameters fsdp runs, with a warning that ddp is the better choice."""


@dataclass
class Parallel:
    """The RL learner's side of several ranks: sharding the models (fsdp) and the plain copy of
    the policy that generation and evaluation use."""

    ranks: Ranks = field(default_factory=Ranks)
    _plain: torch.nn.Module | None = None

    def shard_learner(self, learner: Learner, reference: torch.nn.Module) -> None:
        """fsdp: shard the learner's models and the reference in place (before the optimiser is
        built); each decoder layer is a unit, then the whole model. Gradients are summed across
        ranks, not averaged: the losses carry the global normalisation."""
        if self.ranks.mode != "fsdp":
            return
        from torch.distributed.fsdp import fully_shard

        learner.share_prompts = False  # every rank must run as many forward passes
        size = sum(p.numel() for p in learner.modules().parameters())
        if size < SMALL_FOR_FSDP and self.ranks.is_main:
            warnings.warn(
                f"train.parallel: fsdp shards a model of {size / 1e6:.1f}M parameters: at this size the gathers cost "
                f"more than the memory saved; train.parallel: ddp is faster while the model fits each device.",
                stacklevel=2,
            )
        precision = mixed_precision_policy(learner.autocast, self.ranks.device)
        for model in (*learner.modules().values(), reference):
            units = [*_decoder_layers(model), model]
            for unit in units:
                # The root too (its default is to stay gathered after a forward): a no-grad pass
                # (the reference's, the old log-probs') would otherwise leave the root's weights
                # gathered, and the training pass's gradients of them would never be reduced.
                fully_shard(unit, reshard_after_forward=True, mesh=self.ranks.mesh,
                            **({"mp_policy": precision} if precision is not None else {}))
            for unit in units:  # per unit: the setting is not recursive
                unit.set_gradient_divide_factor(1.0)  # type: ignore[operator]
                unit.set_force_sum_reduction_for_comms(True)  # type: ignore[operator]  # gloo: no pre-multiplied sum

    def keep_plain_copy(self, policy: torch.nn.Module) -> None:
        """fsdp: a plain (unsharded) copy of the policy, made before sharding, for generation."""
        if self.ranks.mode == "fsdp":
            self._plain = copy.deepcopy(policy)
            self._plain.requires_grad_(False)

    def sampling_policy(self, policy: torch.nn.Module) -> torch.nn.Module:
        """The policy generation runs on: itself, or (fsdp) the plain copy refreshed with the
        gathered current weights (a collective: every rank calls it)."""
        if self._plain is None:
            return policy
        from torch.distributed.tensor import DTensor

        into = self._plain.state_dict()  # views of the copy's own tensors
        with torch.no_grad():
            for name, value in policy.state_dict().items():
                # One tensor gathered at a time: the transient is a tensor, not a second model.
                into[name].copy_(value.full_tensor() if isinstance(value, DTensor) else value)
        return self._plain


    def weights_for_engine(self, engine: Any, policy: torch.nn.Module) -> torch.nn.Module:
        """What an engine's ``push_weights`` reads: the policy, or (fsdp, an engine holding its
        own copy: Ray workers) the gathered plain copy. The local sampler reads the sampling
        policy it is handed, so nothing is gathered for it here."""
        if self._plain is None or isinstance(engine, LocalSampler):
            return policy
        return self.sampling_policy(policy)


def mixed_precision_policy(autocast: torch.dtype | None, device: torch.device) -> Any:
    """FSDP2's mixed precision for ``train.autocast: bfloat16`` on a GPU, as peers train: each
    unit's gathered parameters in bf16 for the passes, gradients reduced in float32 and the sharded
    master weights and optimiser state float32. None otherwise (the CPU keeps torch.autocast, and
    gloo's bf16 collectives are not what CPU runs were measured with)."""
    if autocast is None or device.type != "cuda":
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=autocast, reduce_dtype=torch.float32)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Whole tensors of a (possibly sharded) model's state; a collective under fsdp."""
    from torch.distributed.tensor import DTensor

    return {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in model.state_dict().items()}


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a transformers causal LM (``model.layers``, ``transformer.h``)."""
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList):
            return list(obj)
    return []


def gather_shares(
    ranks: Ranks, gen: torch.Generator, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, rollout: Rollout,
    rewards: torch.Tensor, scores: RowScores, completions: list[str], components: dict[str, list[float]],
    pad_token_id: int,
) -> tuple[Rollout, torch.Tensor, RowScores, list[str], dict[str, list[float]]]:
    """Every rank's share of the step's batch, concatenated in rank order: the one-process batch.

    Completions are right-padded to the longest share's length (as one process pads them), and the
    step's generator is set to the state of the rank that sampled longest, which is where one
    process sampling the whole batch would have left it (mini-batch shuffling draws from it next).
    """
    device = rollout.completion_mask.device
    # Pickled through the CPU: an unpickled CUDA tensor would land on the GPU of the rank that sent it.
    shares = ranks.gather(to_device({
        "ids": rollout.completion_ids, "mask": rollout.completion_mask, "logprobs": rollout.logprobs,
        "rewards": rewards, "ref": scores.ref_logprobs, "old": scores.old_logprobs, "values": scores.old_values,
        "completions": completions, "components": components, "gen": gen.get_state(),
    }, torch.device("cpu")))  # fmt: skip
    shares = [{k: v if k == "gen" else to_device(v, device) for k, v in share.items()} for share in shares]
    length = max(share["ids"].shape[1] for share in shares)
    gen.set_state(max(shares, key=lambda share: share["ids"].shape[1])["gen"])

    def cat(key: str, fill: float = 0.0) -> torch.Tensor:
        return torch.cat([torch.nn.functional.pad(s[key], (0, length - s[key].shape[1]), value=fill) for s in shares])

    whole = Rollout(prompt_ids, prompt_mask, cat("ids", pad_token_id).long(), cat("mask"), cat("logprobs"))
    values = cat("values") if scores.old_values is not None else None
    merged = {k: [v for s in shares for v in s["components"][k]] for k in components}
    return (whole, torch.cat([s["rewards"] for s in shares]), RowScores(cat("ref"), cat("old"), values),
            [c for s in shares for c in s["completions"]], merged)


def gather_rows(ranks: Ranks, rows: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """Every rank's (rows, T_rank) share of a per-token tensor, right-padded with 0 to ``length``
    columns and concatenated in rank order (as :func:`gather_shares` does the rollout); None stays
    None (then on every rank: the same reward gives dense rewards on all of them or on none)."""
    if rows is None:
        return None
    device = rows.device
    shares = ranks.gather(rows.cpu())
    return torch.cat([torch.nn.functional.pad(s, (0, length - s.shape[1])) for s in shares]).to(device)
