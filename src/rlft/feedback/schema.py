"""The feedback database's tables and indexes, written once for SQLite and PostgreSQL.

Both databases understand these statements as written; only the identity column differs
(``{id_pk}``, filled from the dialect).

``items``, ``annotators`` and ``judgements`` hold the annotation app's prepared items and votes;
``responses`` and ``response_feedback`` hold the served model's live answers and the votes on
them (:mod:`rlft.feedback.live`). A pair vote is stored with its two response ids sorted (in
Python, so the order does not depend on a database collation) and ``choice`` = the preferred id;
the one-vote index then sees both orders of one pair as the same question.
"""

from __future__ import annotations

from rlft.feedback.database import Cursor, Dialect

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    prompt TEXT NOT NULL,
    completion_a TEXT NOT NULL,
    completion_b TEXT,
    source TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS annotators (
    id {id_pk},
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    consent_at TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS judgements (
    id {id_pk},
    idempotency_key TEXT NOT NULL UNIQUE,
    item_id TEXT NOT NULL REFERENCES items (id),
    annotator_id BIGINT NOT NULL REFERENCES annotators (id),
    kind TEXT NOT NULL,
    choice TEXT NOT NULL,
    side TEXT,
    comment TEXT,
    created_at TEXT NOT NULL,
    CHECK ((kind = 'pair' AND choice IN ('A', 'B', 'tie') AND side IS NULL)
        OR (kind = 'rating' AND choice IN ('up', 'down') AND side IN ('A', 'B')))
);
CREATE INDEX IF NOT EXISTS judgements_item ON judgements (item_id);
CREATE INDEX IF NOT EXISTS judgements_annotator ON judgements (annotator_id);
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    annotator_id BIGINT NOT NULL REFERENCES annotators (id),
    model_version INTEGER NOT NULL,
    adapter TEXT,
    prompt TEXT NOT NULL,
    completion TEXT NOT NULL,
    created_at TEXT NOT NULL,
    CHECK (model_version >= 0)
);
CREATE INDEX IF NOT EXISTS responses_annotator ON responses (annotator_id);
CREATE TABLE IF NOT EXISTS response_feedback (
    id {id_pk},
    annotator_id BIGINT NOT NULL REFERENCES annotators (id),
    kind TEXT NOT NULL,
    response_id TEXT NOT NULL REFERENCES responses (id),
    other_response_id TEXT REFERENCES responses (id),
    choice TEXT NOT NULL,
    created_at TEXT NOT NULL,
    CHECK ((kind = 'rating' AND choice IN ('up', 'down') AND other_response_id IS NULL)
        OR (kind = 'pair' AND other_response_id IS NOT NULL AND response_id <> other_response_id
            AND choice IN (response_id, other_response_id)))
);
CREATE INDEX IF NOT EXISTS response_feedback_annotator ON response_feedback (annotator_id);
CREATE INDEX IF NOT EXISTS response_feedback_response ON response_feedback (response_id);
CREATE INDEX IF NOT EXISTS response_feedback_other ON response_feedback (other_response_id);
CREATE UNIQUE INDEX IF NOT EXISTS response_feedback_one_vote
    ON response_feedback (annotator_id, kind, response_id, COALESCE(other_response_id, ''))
"""

# The one-vote rule. NULL sides (pairs) compare as distinct in a UNIQUE constraint on both
# databases, hence the expression.
ONE_VOTE_INDEX = "judgements_one_vote"
ONE_VOTE_SQL = (
    f"CREATE UNIQUE INDEX IF NOT EXISTS {ONE_VOTE_INDEX} "
    "ON judgements (annotator_id, item_id, kind, COALESCE(side, ''))"
)
# A database written before the rule may hold several votes per annotator; the latest stays.
KEEP_LATEST_VOTE_SQL = (
    "DELETE FROM judgements WHERE id NOT IN (SELECT MAX(id) FROM judgements "
    "GROUP BY annotator_id, item_id, kind, COALESCE(side, ''))"
)


def create_schema(cur: Cursor, dialect: Dialect) -> None:
    """Create what is missing (in a write transaction), and bring a database written before the
    one-vote rule up to it."""
    for statement in SCHEMA.format(id_pk=dialect.id_pk).split(";"):
        if statement.strip():
            cur.execute(statement)
    if not dialect.has_index(cur, ONE_VOTE_INDEX):
        cur.execute(KEEP_LATEST_VOTE_SQL)
        cur.execute(ONE_VOTE_SQL)
