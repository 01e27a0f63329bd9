"""Generation: batched sampling with a KV cache, and scoring of sampled sequences."""
