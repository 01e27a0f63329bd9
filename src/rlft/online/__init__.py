"""Learning from the people who use the served model: the online loop (``loop``), its gate,
versions, per-user adapters and the poisoning defence (``poisoning``). Nothing is imported
here, so ``import rlft.online.poisoning`` stays light."""
