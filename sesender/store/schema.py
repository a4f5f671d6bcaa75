"""The SQLite schema as versioned migrations, tracked in ``PRAGMA user_version``.

A migration is appended, never edited: a database at version N gets migrations N+1.. applied in
order, each in its own transaction, at start and by ``sesender init-db``. The status numbers the
first migrations write as literals (``status = 0`` in an index, ``2`` in a trigger) are those of
:class:`~sesender.models.Status`, frozen as the stored data is; new SQL takes them from the enum.

Why the schema looks the way it does:

- ``contents`` holds subject and body once per distinct content (keyed by a digest), not per
  recipient: a 10,000-recipient submission stores its body once.
- ``requests.due_at`` is the one queue key: immediate emails are due at submission time, scheduled
  ones at their time, retries at their backoff time. The partial index ``requests_queue`` holds only
  ``Created`` rows, so the scheduler's claim stays cheap however many emails were already sent.
- ``topic_counts`` and ``topic_result_counts`` are counters kept exact by triggers (and by the
  store for inserts, which it does in bulk), so topic statistics cost the same on a topic of ten
  emails or ten million.
- ``sent_minutes`` buckets successful sends per minute for ``/v1/events/counts/sent``; the store
  counts the partial minute at the window's edge exactly from ``requests_sent_at``.
- ``results`` keeps one row per (email, event type) with a counter, which is what the API reports
  ("counted once per recipient"); ``sns_messages`` remembers SNS message ids for deduplication.
- ``requests.data`` holds a templated email's merge-field values (only the fields its template
  uses), so the content itself stays shared by every recipient.
- ``contents.refs``, ``pruned_requests`` and ``lifecycle_counters`` serve retention: see
  migration 9 and :mod:`sesender.store.sqlite_lifecycle`. No trigger fires on DELETE, so pruning
  emails and their results leaves every counter above unchanged.
- Click tracking (migration 10): ``requests.track_opens`` / ``track_clicks`` are each email's
  choice, made at submission; ``links`` is each content's tracked links by position (the redirect
  target, never read from the request); ``link_clicks`` counts clicks per (topic, link), unique and
  total, kept by the store as it records a click, so it survives the pruning of per-email rows;
  ``email_link_clicks`` is the per-email row that tells a unique click from a repeat, with the
  first click's user agent and delay since sending (prefetching scanners). Since migration 12,
  ``links`` outlive their content and ``click_ranges`` maps pruned click-tracked emails to their
  content, so a pruned email's click link still redirects.
- ``topic_cancellations`` makes a cancellation durable: each cancelled topic with the highest
  request id it covers, checked by every statement that would put an email back in the queue.
- ``api_keys`` holds named keys as SHA-256 digests (a key is 256 random bits: a fast hash cannot
  be reversed by guessing, and checking stays cheap on every request); ``contents.sender`` and
  ``contents.reply_to`` give a message its own ``from`` (part of the content digest, so two
  senders of one text are two contents).
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: the initial schema.
    """
    CREATE TABLE contents (
        id INTEGER PRIMARY KEY,
        digest BLOB NOT NULL UNIQUE,
        subject TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );

    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        topic_id TEXT NOT NULL,
        content_id INTEGER NOT NULL REFERENCES contents (id),
        email TEXT NOT NULL,
        status INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        due_at INTEGER NOT NULL,
        message_id TEXT,
        error TEXT,
        failure_kind TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        sent_at INTEGER
    );
    -- The scheduler: due Created emails, oldest first.
    CREATE INDEX requests_queue ON requests (due_at, id) WHERE status = 0;
    -- Crash recovery: emails claimed by a previous run.
    CREATE INDEX requests_claimed ON requests (id) WHERE status = 1;
    -- Cancellation and retry of a topic, by status.
    CREATE INDEX requests_topic_status ON requests (topic_id, status);
    -- Counts of recent sends (the partial minute at the window's edge).
    CREATE INDEX requests_sent_at ON requests (sent_at) WHERE sent_at IS NOT NULL;
    -- SES events are matched by the provider's message id.
    CREATE INDEX requests_message_id ON requests (message_id) WHERE message_id IS NOT NULL;

    CREATE TABLE topic_counts (
        topic_id TEXT NOT NULL,
        status INTEGER NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (topic_id, status)
    ) WITHOUT ROWID;

    CREATE TRIGGER requests_status_counts AFTER UPDATE OF status ON requests
    WHEN OLD.status <> NEW.status
    BEGIN
        UPDATE topic_counts SET count = count - 1
            WHERE topic_id = OLD.topic_id AND status = OLD.status;
        INSERT INTO topic_counts (topic_id, status, count) VALUES (NEW.topic_id, NEW.status, 1)
            ON CONFLICT (topic_id, status) DO UPDATE SET count = count + 1;
    END;

    CREATE TABLE sent_minutes (
        minute INTEGER PRIMARY KEY,
        count INTEGER NOT NULL
    );

    CREATE TRIGGER requests_sent_minutes AFTER UPDATE OF status ON requests
    WHEN NEW.status = 2 AND OLD.status <> 2 AND NEW.sent_at IS NOT NULL
    BEGIN
        INSERT INTO sent_minutes (minute, count) VALUES (NEW.sent_at / 60000, 1)
            ON CONFLICT (minute) DO UPDATE SET count = count + 1;
    END;

    CREATE TABLE results (
        id INTEGER PRIMARY KEY,
        request_id INTEGER NOT NULL REFERENCES requests (id),
        topic_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        count INTEGER NOT NULL DEFAULT 1,
        first_at INTEGER NOT NULL,
        last_at INTEGER NOT NULL,
        detail TEXT,
        UNIQUE (request_id, event_type)
    );

    CREATE TABLE topic_result_counts (
        topic_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (topic_id, event_type)
    ) WITHOUT ROWID;

    CREATE TRIGGER results_counts AFTER INSERT ON results
    BEGIN
        INSERT INTO topic_result_counts (topic_id, event_type, count)
            VALUES (NEW.topic_id, NEW.event_type, 1)
            ON CONFLICT (topic_id, event_type) DO UPDATE SET count = count + 1;
    END;

    CREATE TABLE suppressions (
        email TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        source TEXT NOT NULL,
        detail TEXT,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE idempotency_keys (
        key TEXT PRIMARY KEY,
        body_digest BLOB NOT NULL,
        response TEXT NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

    CREATE TABLE sns_messages (
        message_id TEXT PRIMARY KEY,
        received_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX sns_messages_received ON sns_messages (received_at);
    """,
    # 2: transient bounces per address, for SUPPRESS_AFTER_TRANSIENT_BOUNCES.
    """
    CREATE TABLE address_bounces (
        email TEXT PRIMARY KEY,
        transient INTEGER NOT NULL,
        last_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 3: topics by recency, for the dashboard's list of recent topics.
    """
    CREATE TABLE topics (
        topic_id TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX topics_recent ON topics (updated_at);
    INSERT INTO topics (topic_id, created_at, updated_at)
        SELECT topic_id, MIN(created_at), MAX(created_at) FROM requests GROUP BY topic_id;
    """,
    # 4: durable cancellation: each cancelled topic with the highest request id it covers, so an
    # outcome that would requeue a cancelled email (a retry, a deferral) stops it instead, and a
    # restart cannot send it. Emails of the topic with higher ids (accepted later) are unaffected.
    """
    CREATE TABLE topic_cancellations (
        topic_id TEXT PRIMARY KEY,
        up_to_id INTEGER NOT NULL,
        cancelled_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 5: secrets the service generates once and must find again at every start (the tracking
    # secret, the hash of a generated API key): see sesender.store.service_secrets.
    """
    CREATE TABLE service_secrets (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 6: merge fields: the values a templated email is rendered with, as a JSON object of strings
    # (NULL for an email whose content is sent as given). Adding a nullable column rewrites no row.
    """
    ALTER TABLE requests ADD COLUMN data TEXT;
    """,
    # 7: named API keys (kept as SHA-256 digests, revoked rather than deleted, so a listing and
    # the emails' api_key_id still name them), the key that submitted each email (a ``send`` key
    # reads back only its own), and a message's sender and Reply-To, kept with its content
    # (NULL: the default sender), so a claim joins them once per content, as it does the body.
    """
    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        senders TEXT,
        prefix TEXT NOT NULL,
        digest BLOB NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER,
        revoked_at INTEGER
    );
    ALTER TABLE requests ADD COLUMN api_key_id INTEGER;
    ALTER TABLE contents ADD COLUMN sender TEXT;
    ALTER TABLE contents ADD COLUMN reply_to TEXT;
    """,
    # 8: the reputation guard (sesender.pipeline.reputation_guard). Sends, permanent bounces and
    # complaints counted per topic and 10-second bucket of the send time by triggers, so a rate
    # over a sliding window is a sum over the window's buckets (account-wide: over every topic's),
    # never a scan of ``requests`` or ``results``; one upsert per sent email. A bounce counts in
    # the bucket of its email's send (falling back to the event's time when the send is not
    # recorded yet): the rate is "of the emails sent in the window, how many bounced".
    # ``reputation_holds`` makes the guard's decisions durable: a held topic or account stays
    # held across restarts until an operator resumes it, and ``resumed_at`` starts the window
    # again after a resume (else the same bounces would trip the guard again at once). Held
    # emails have status 6 (``Held``).
    """
    CREATE TABLE guard_topic_counts (
        topic_id TEXT NOT NULL,
        bucket INTEGER NOT NULL,
        sends INTEGER NOT NULL DEFAULT 0,
        bounces INTEGER NOT NULL DEFAULT 0,
        complaints INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (topic_id, bucket)
    ) WITHOUT ROWID;
    CREATE INDEX guard_topic_counts_bucket ON guard_topic_counts (bucket);

    CREATE TRIGGER requests_guard_sends AFTER UPDATE OF status ON requests
    WHEN NEW.status = 2 AND OLD.status <> 2 AND NEW.sent_at IS NOT NULL
    BEGIN
        INSERT INTO guard_topic_counts (topic_id, bucket, sends)
            VALUES (NEW.topic_id, NEW.sent_at / 10000, 1)
            ON CONFLICT (topic_id, bucket) DO UPDATE SET sends = sends + 1;
    END;

    CREATE TRIGGER results_guard_bounces AFTER INSERT ON results
    WHEN NEW.event_type = 'Bounce'
        AND (CASE WHEN json_valid(NEW.detail) THEN json_extract(NEW.detail, '$.bounce_type') END)
            = 'Permanent'
    BEGIN
        INSERT INTO guard_topic_counts (topic_id, bucket, bounces) VALUES (NEW.topic_id,
            COALESCE((SELECT sent_at FROM requests WHERE id = NEW.request_id), NEW.first_at)
                / 10000, 1)
            ON CONFLICT (topic_id, bucket) DO UPDATE SET bounces = bounces + 1;
    END;

    -- A transient bounce of an email recorded first, then a permanent one: counted once, then.
    CREATE TRIGGER results_guard_bounces_upgraded AFTER UPDATE OF detail ON results
    WHEN NEW.event_type = 'Bounce'
        AND (CASE WHEN json_valid(NEW.detail) THEN json_extract(NEW.detail, '$.bounce_type') END)
            = 'Permanent'
        AND (CASE WHEN json_valid(OLD.detail) THEN json_extract(OLD.detail, '$.bounce_type') END)
            IS NOT 'Permanent'
    BEGIN
        INSERT INTO guard_topic_counts (topic_id, bucket, bounces) VALUES (NEW.topic_id,
            COALESCE((SELECT sent_at FROM requests WHERE id = NEW.request_id), NEW.first_at)
                / 10000, 1)
            ON CONFLICT (topic_id, bucket) DO UPDATE SET bounces = bounces + 1;
    END;

    -- A complaint, unless its feedback report says "not-spam" (which says the opposite).
    CREATE TRIGGER results_guard_complaints AFTER INSERT ON results
    WHEN NEW.event_type = 'Complaint'
        AND COALESCE(
            CASE WHEN json_valid(NEW.detail) THEN json_extract(NEW.detail, '$.feedback_type') END,
            '') <> 'not-spam'
    BEGIN
        INSERT INTO guard_topic_counts (topic_id, bucket, complaints) VALUES (NEW.topic_id,
            COALESCE((SELECT sent_at FROM requests WHERE id = NEW.request_id), NEW.first_at)
                / 10000, 1)
            ON CONFLICT (topic_id, bucket) DO UPDATE SET complaints = complaints + 1;
    END;

    CREATE TABLE reputation_holds (
        scope TEXT NOT NULL,
        topic_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        held_at INTEGER,
        resumed_at INTEGER,
        PRIMARY KEY (scope, topic_id)
    ) WITHOUT ROWID;
    """,
    # 9: retention (sesender.store.sqlite_lifecycle). ``contents.refs`` counts the emails that
    # use a content, kept by submit and by pruning, so pruning finds contents no email refers to
    # without an index on requests (content_id) (which would cost every email bytes and insert
    # time); existing rows are counted in one pass. ``pruned_requests`` remembers the id ranges
    # pruning walked (one row per housekeeping run), so GET /v1/messages/{id} tells a pruned
    # email (410) from one that never existed (404). ``lifecycle_counters`` keeps totals and
    # times (emails pruned, last prune, last backup) across restarts and processes.
    """
    ALTER TABLE contents ADD COLUMN refs INTEGER NOT NULL DEFAULT 0;
    UPDATE contents SET refs = used.n
        FROM (SELECT content_id, COUNT(*) AS n FROM requests GROUP BY content_id) AS used
        WHERE contents.id = used.content_id;
    CREATE TABLE pruned_requests (
        first_id INTEGER PRIMARY KEY,
        last_id INTEGER NOT NULL,
        pruned_at INTEGER NOT NULL
    );
    CREATE TABLE lifecycle_counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 10: click tracking: each email's tracking choices (NULL for emails accepted before: opens
    # as OPEN_TRACKING_ENABLED says, no click tracking), each content's tracked links, per-link
    # counters per topic and per-email click rows (see the module docstring).
    """
    ALTER TABLE requests ADD COLUMN track_opens INTEGER;
    ALTER TABLE requests ADD COLUMN track_clicks INTEGER;

    CREATE TABLE links (
        content_id INTEGER NOT NULL REFERENCES contents (id),
        position INTEGER NOT NULL,
        url TEXT NOT NULL,
        PRIMARY KEY (content_id, position)
    ) WITHOUT ROWID;

    CREATE TABLE link_clicks (
        topic_id TEXT NOT NULL,
        url TEXT NOT NULL,
        unique_clicks INTEGER NOT NULL DEFAULT 0,
        total_clicks INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (topic_id, url)
    );

    CREATE TABLE email_link_clicks (
        request_id INTEGER NOT NULL REFERENCES requests (id),
        url TEXT NOT NULL,
        count INTEGER NOT NULL,
        first_at INTEGER NOT NULL,
        last_at INTEGER NOT NULL,
        user_agent TEXT,
        delay_ms INTEGER,
        PRIMARY KEY (request_id, url)
    );
    """,
    # 11: outbound webhooks (see sesender/webhooks/ and docs/adr/0006-webhook-events-by-trigger.md).
    # ``webhook_subscriptions`` holds one row per (event type, endpoint) for ENABLED endpoints
    # only, so the triggers' condition is one index probe that finds nothing when nobody listens:
    # the send path then writes no event row at all. The triggers run inside the statement that
    # records what they report (the bulk outcome UPDATE, the feedback upsert), so an event is
    # committed with its cause or not at all. Status numbers are those of models.Status
    # (2 Sent, 3 Failed, 4 Stopped, 5 Suppressed; 0 Created and 1 Processed are pending).
    """
    CREATE TABLE webhook_endpoints (
        id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        event_types TEXT NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 1,
        disabled_reason TEXT,
        secret TEXT NOT NULL,
        previous_secret TEXT,
        previous_secret_until INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        failing_since INTEGER,
        last_error TEXT,
        last_error_at INTEGER,
        last_attempt_at INTEGER,
        last_success_at INTEGER
    ) WITHOUT ROWID;

    CREATE TABLE webhook_subscriptions (
        event_type TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        PRIMARY KEY (event_type, endpoint_id)
    ) WITHOUT ROWID;

    CREATE TABLE webhook_status_events (
        status INTEGER PRIMARY KEY,
        event_type TEXT NOT NULL
    );
    INSERT INTO webhook_status_events (status, event_type) VALUES
        (2, 'email.sent'), (3, 'email.failed'), (4, 'email.stopped'), (5, 'email.suppressed');

    CREATE TABLE webhook_result_events (
        result_type TEXT PRIMARY KEY,
        event_type TEXT NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO webhook_result_events (result_type, event_type) VALUES
        ('Delivery', 'email.delivered'), ('Bounce', 'email.bounced'),
        ('Complaint', 'email.complained'), ('Open', 'email.opened'), ('Click', 'email.clicked'),
        ('Unsubscribe', 'email.unsubscribed'), ('Subscription', 'email.unsubscribed');

    -- One row per (event, endpoint): the delivery queue. state 0 pending, 1 delivered,
    -- 2 failed. A deliverer claims a row by setting lease_until; due_at is the next attempt.
    CREATE TABLE webhook_events (
        id INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        endpoint_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        request_id INTEGER,
        topic_id TEXT,
        email TEXT,
        message_id TEXT,
        suppressed INTEGER,
        detail TEXT,
        occurred_at INTEGER NOT NULL,
        state INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        due_at INTEGER NOT NULL DEFAULT 0,
        lease_until INTEGER,
        finished_at INTEGER,
        last_error TEXT
    );
    CREATE INDEX webhook_events_due ON webhook_events (endpoint_id, due_at, id) WHERE state = 0;
    CREATE INDEX webhook_events_leased ON webhook_events (lease_until)
        WHERE lease_until IS NOT NULL;
    CREATE INDEX webhook_events_finished ON webhook_events (finished_at) WHERE state <> 0;
    CREATE INDEX webhook_events_endpoint ON webhook_events (endpoint_id, state, id);

    CREATE TABLE webhook_attempts (
        id INTEGER PRIMARY KEY,
        endpoint_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        attempted_at INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        status_code INTEGER,
        outcome TEXT NOT NULL,
        error TEXT
    );
    CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, attempted_at);
    CREATE INDEX webhook_attempts_time ON webhook_attempts (attempted_at);

    -- One trigger for both status events, so an outcome row pays one trigger, whose condition
    -- (any subscription at all) is one probe; the inserts' joins find nothing for an event type
    -- nobody subscribes to.
    CREATE TRIGGER webhook_on_status AFTER UPDATE OF status ON requests
    WHEN NEW.status <> OLD.status AND EXISTS (SELECT 1 FROM webhook_subscriptions)
    BEGIN
        INSERT INTO webhook_events (event_id, endpoint_id, event_type, request_id, topic_id,
            email, message_id, detail, occurred_at)
        SELECT 'evt_' || lower(hex(randomblob(16))), s.endpoint_id, t.event_type, NEW.id,
            NEW.topic_id, NEW.email, NEW.message_id,
            CASE WHEN NEW.status = 3
                THEN json_object('error', NEW.error, 'failure_kind', NEW.failure_kind) END,
            NEW.updated_at
        FROM webhook_status_events AS t
        JOIN webhook_subscriptions AS s ON s.event_type = t.event_type
        WHERE t.status = NEW.status;
        INSERT INTO webhook_events (event_id, endpoint_id, event_type, topic_id, occurred_at)
        SELECT 'evt_' || lower(hex(randomblob(16))), s.endpoint_id, s.event_type,
            NEW.topic_id, NEW.updated_at
        FROM webhook_subscriptions AS s
        WHERE s.event_type = 'topic.completed'
            AND OLD.status IN (0, 1) AND NEW.status NOT IN (0, 1)
            AND NOT EXISTS (SELECT 1 FROM requests
                WHERE topic_id = NEW.topic_id AND status IN (0, 1));
    END;

    CREATE TRIGGER webhook_result_inserted AFTER INSERT ON results
    WHEN EXISTS (
        SELECT 1 FROM webhook_result_events AS t
        JOIN webhook_subscriptions AS s ON s.event_type = t.event_type
        WHERE t.result_type = NEW.event_type)
    BEGIN
        INSERT INTO webhook_events (event_id, endpoint_id, event_type, request_id, topic_id,
            email, message_id, suppressed, detail, occurred_at)
        SELECT 'evt_' || lower(hex(randomblob(16))), s.endpoint_id, t.event_type, r.id,
            r.topic_id, r.email, r.message_id,
            EXISTS (SELECT 1 FROM suppressions WHERE email = lower(r.email)),
            NEW.detail, NEW.last_at
        FROM webhook_result_events AS t
        JOIN webhook_subscriptions AS s ON s.event_type = t.event_type
        JOIN requests AS r ON r.id = NEW.request_id
        WHERE t.result_type = NEW.event_type;
    END;

    CREATE TRIGGER webhook_result_repeated AFTER UPDATE OF count ON results
    WHEN NEW.count > OLD.count AND EXISTS (
        SELECT 1 FROM webhook_result_events AS t
        JOIN webhook_subscriptions AS s ON s.event_type = t.event_type
        WHERE t.result_type = NEW.event_type)
    BEGIN
        INSERT INTO webhook_events (event_id, endpoint_id, event_type, request_id, topic_id,
            email, message_id, suppressed, detail, occurred_at)
        SELECT 'evt_' || lower(hex(randomblob(16))), s.endpoint_id, t.event_type, r.id,
            r.topic_id, r.email, r.message_id,
            EXISTS (SELECT 1 FROM suppressions WHERE email = lower(r.email)),
            NEW.detail, NEW.last_at
        FROM webhook_result_events AS t
        JOIN webhook_subscriptions AS s ON s.event_type = t.event_type
        JOIN requests AS r ON r.id = NEW.request_id
        WHERE t.result_type = NEW.event_type;
    END;
    """,
    # 12: a pruned email's click links keep redirecting (issue 18). ``links`` no longer
    # references ``contents``: a content's tracked links outlive it (a URL per link), and
    # ``click_ranges`` maps the ids of pruned click-tracked emails, in runs of consecutive ids
    # with one content, to that content (sesender.store.sqlite_lifecycle).
    """
    ALTER TABLE links RENAME TO links_before_12;
    CREATE TABLE links (
        content_id INTEGER NOT NULL,
        position INTEGER NOT NULL,
        url TEXT NOT NULL,
        PRIMARY KEY (content_id, position)
    ) WITHOUT ROWID;
    INSERT INTO links (content_id, position, url)
        SELECT content_id, position, url FROM links_before_12;
    DROP TABLE links_before_12;

    CREATE TABLE click_ranges (
        first_id INTEGER PRIMARY KEY,
        last_id INTEGER NOT NULL,
        content_id INTEGER NOT NULL
    );
    """,
)

#: PRAGMAs set on every connection (docs/operations.md explains WAL and backups). ``auto_vacuum``
#: only takes effect on a new database, before the first table exists, so :func:`connect` (in
#: sqlite_queries.py) sets it first.
CONNECTION_PRAGMAS: tuple[str, ...] = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA mmap_size = 268435456",
    "PRAGMA cache_size = -65536",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA foreign_keys = ON",
)

LATEST_VERSION = len(MIGRATIONS)
