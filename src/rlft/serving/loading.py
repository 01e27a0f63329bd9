"""What ``rlft serve`` opens: the model (a model folder, a LoRA adapter folder, or a run folder)
and the feedback database."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.errors import RlftError
from rlft.models.loading import TOKENIZER_FILES, load_model, load_tokenizer
from rlft.models.lora import find_adapter

if TYPE_CHECKING:
    from rlft.feedback.store import Store


def model_folder(target: str | Path) -> tuple[Path, Path | None]:
    """(model or adapter folder, base folder of an adapter or None) for ``target``: a run folder
    means its ``final_model/`` (as ``rlft eval`` reads it), anything else a model or adapter folder."""
    root = Path(target).expanduser()
    if not root.exists():
        raise RlftError(
            f"{root} does not exist. Give a run folder (rlft serve runs/NAME serves its final_model/) "
            "or a Hugging Face model folder written by save_pretrained."
        )
    if (root / "config.yaml").is_file() and not (root / "config.json").is_file():
        final = root / "final_model"
        if not (final / "config.json").is_file() and not (final / "adapter_config.json").is_file():
            raise RlftError(f"Run folder {root} has no final_model/ yet; finish (or resume) its training first.")
    return find_adapter(root)


def load_served_model(target: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer of ``target`` (see :func:`model_folder`); a LoRA adapter is merged into
    its base, so the host serves one plain transformers model."""
    folder, base = model_folder(target)
    if base is None:
        model_dir, tokenizer_dir = folder, folder
    else:
        if not Path(base).exists():
            raise RlftError(f"The adapter in {folder} was trained on {base}, which does not exist.")
        model_dir = Path(base)
        has_own = any((folder / name).exists() for name in TOKENIZER_FILES)
        tokenizer_dir = folder if has_own else model_dir
    if not any((tokenizer_dir / name).exists() for name in TOKENIZER_FILES):
        raise RlftError(
            f"{tokenizer_dir} has a model but no tokenizer ({', '.join(TOKENIZER_FILES)}); the server "
            "needs one to read prompts. Save it next to the model with tokenizer.save_pretrained(FOLDER)."
        )
    tokenizer = load_tokenizer(str(tokenizer_dir))
    model = load_model(str(model_dir))
    if base is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def open_store(db: str, create: bool = False) -> Store:
    """The feedback store at ``db``: a ``postgresql://`` URL, or a SQLite file that must exist
    unless ``create`` (a mistyped path would otherwise serve an empty database nobody can sign in
    to). A file that is not a SQLite database is one :class:`RlftError`, not a traceback."""
    from rlft.feedback.store import Store

    if not db.startswith(("postgresql://", "postgres://")):
        path = Path(db).expanduser()
        if path.is_dir():
            raise RlftError(f"--db {db} is a folder; give a SQLite file (or a postgresql:// URL).")
        if not path.exists() and not create:
            raise RlftError(
                f"--db {db} does not exist. Add users to it first (rlft feedback add-annotator NAME "
                f"--db {db}), or add --create to start with an empty database."
            )
    try:
        return Store(db)
    except sqlite3.Error as exc:
        raise RlftError(
            f"--db {db} cannot be opened as a SQLite database ({exc}); give the file that "
            "`rlft feedback add-annotator` wrote, or a new path with --create."
        ) from None
