"""Opening the online loop's pieces from a recipe: versions, the model host, the feedback store,
the loop. ``rlft online`` and the benchmark open them the same way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rlft.config.online import OnlineRecipe
from rlft.errors import RlftError
from rlft.feedback.live import LiveFeedback
from rlft.feedback.store import Store
from rlft.online.loop import OnlineLoop
from rlft.online.versions import VersionStore
from rlft.responsible.audit_log import AuditLog, run_provenance
from rlft.serving.host import ModelHost


@dataclass
class OnlineSession:
    recipe: OnlineRecipe
    versions: VersionStore
    host: ModelHost
    store: Store
    live: LiveFeedback
    loop: OnlineLoop

    def close(self) -> None:
        self.loop.stop()
        self.host.close()
        self.store.close()
        self.versions.unlock()


def first_version(recipe: OnlineRecipe, versions: VersionStore) -> None:
    """Copy the recipe's model into ``versions/v1`` (once: a restarted loop keeps its versions)."""
    from rlft.models.loading import load_policy
    from rlft.models.lora import export_merged, find_adapter

    if versions.exists():
        return
    folder, base = find_adapter(recipe.model)
    if base is not None:  # a LoRA run: serve its adapter merged into the base
        export_merged(recipe.model, versions.version_folder(1))
    else:
        versions.save_version(1, *load_policy(str(folder)))
    versions.save_state(versions.load_state())
    AuditLog(versions.root).append(
        "online_start", model=str(Path(recipe.model).expanduser().resolve()), version=1, **run_provenance()
    )


def open_online(recipe: OnlineRecipe) -> OnlineSession:
    """Everything ``rlft online`` runs: the served version loaded into a host with the users'
    adapters, the feedback store and the loop (not started)."""
    if recipe.torch_threads:
        torch.set_num_threads(recipe.torch_threads)
    versions = VersionStore(recipe.output_dir)
    versions.lock()
    try:
        return _open(recipe, versions)
    except BaseException:
        versions.unlock()
        raise


def _open(recipe: OnlineRecipe, versions: VersionStore) -> OnlineSession:
    first_version(recipe, versions)
    state = versions.load_state()
    adapter_r = recipe.personalization.r if recipe.personalization.method == "adapter" else None
    host = ModelHost.from_folder(
        versions.version_folder(state.served_version), version=state.served_version,
        adapter_r=adapter_r, max_batch_size=recipe.serve.max_batch_size, device=recipe.device,
    )  # fmt: skip
    for user, (lora_state, _meta) in versions.load_adapters().items():
        if adapter_r is None:
            break
        try:
            host.set_adapter(user, lora_state)
        except Exception as exc:  # e.g. saved with another personalization.r
            host.close()
            raise RlftError(
                f"The adapter of a user in {versions.root / 'adapters'} does not fit "
                f"personalization.r={adapter_r} ({exc}); delete that folder or restore the recipe's r."
            ) from None
    store = Store(recipe.feedback_db)
    live = LiveFeedback(store)
    loop = OnlineLoop(recipe, host, live, versions)
    return OnlineSession(recipe, versions, host, store, live, loop)


def forget_user(store: Store, versions: VersionStore | None, user: str) -> dict[str, int]:
    """Delete ``user``'s judgements, live answers, votes and identity from the store and their
    adapter from ``versions`` (a running loop drops it from the server at its next poll); the
    audit log records that it happened, with a hash of the name, not the name."""
    from rlft.online.versions import adapter_key

    rows = store.forget_annotator(user)
    adapter = versions.remove_adapter(user) if versions is not None else False
    if versions is not None:
        AuditLog(versions.root).append(
            "online_user_forgotten", user_key=adapter_key(user), rows_deleted=rows, adapter_deleted=adapter
        )
    return {"rows_deleted": rows, "adapter_deleted": int(adapter)}
