-- Issue 20: a participant hides a conversation from their own list; it comes back by itself
-- with the next activity after the moment it was hidden.
ALTER TABLE messaging.participants ADD COLUMN hidden_at timestamptz;
