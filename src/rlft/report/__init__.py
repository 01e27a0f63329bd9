"""What a run changed, for people: the HTML report with learning curves and per-token views, and the model card.

Above the trainers: the report re-scores a finished run with the collector training used
(``rlft.trainers.batch.score_rollout``).
"""
