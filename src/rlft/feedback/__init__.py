"""Human feedback: a store (SQLite or PostgreSQL), a web app for annotators, and export of
preference pairs. The web app (``rlft.feedback.server``) imports FastAPI and uvicorn; nothing here
does, so ``import rlft.feedback`` stays light. See ``docs/feedback.md``."""

from rlft.feedback.store import AddedItems, Annotator, Item, Judgement, Store, SubmitResult

__all__ = ["AddedItems", "Annotator", "Item", "Judgement", "Store", "SubmitResult"]
