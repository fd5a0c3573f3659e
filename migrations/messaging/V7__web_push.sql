-- Web Push (RFC 8030, payloads encrypted per RFC 8291, VAPID per RFC 8292; issue 19).

-- A browser's push subscription, made by one session (it ends with it). `endpoint` is the
-- push service's URL for that browser; `p256dh` and `auth` (base64url) encrypt payloads for it.
CREATE TABLE messaging.push_subscriptions (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL,
    session_id    uuid NOT NULL,
    endpoint      text NOT NULL UNIQUE CHECK (length(endpoint) <= 2048),
    p256dh        text NOT NULL CHECK (length(p256dh) <= 128),
    auth          text NOT NULL CHECK (length(auth) <= 64),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_sent_at  timestamptz
);
CREATE INDEX push_subscriptions_user_idx ON messaging.push_subscriptions (user_id);
CREATE INDEX push_subscriptions_session_idx ON messaging.push_subscriptions (session_id);

-- One push per message per device, at most: the key is (message, subscription). Written
-- by the notification worker; a sender claims due `pending` rows, marks them `sending` and
-- commits before it calls the push service, so a crash mid-call never sends twice (it
-- sends none). Known failures (the push service refused, 429/5xx, no connection) go back to
-- `pending` with a later `due_at`.
CREATE TABLE messaging.push_deliveries (
    message_id      uuid NOT NULL REFERENCES messaging.messages (id) ON DELETE CASCADE,
    subscription_id uuid NOT NULL REFERENCES messaging.push_subscriptions (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sending', 'sent', 'skipped', 'failed')),
    attempts        int NOT NULL DEFAULT 0,
    due_at          timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    detail          text,
    PRIMARY KEY (message_id, subscription_id)
);
CREATE INDEX push_deliveries_due_idx ON messaging.push_deliveries (due_at) WHERE state = 'pending';
CREATE INDEX push_deliveries_subscription_idx ON messaging.push_deliveries (subscription_id);
