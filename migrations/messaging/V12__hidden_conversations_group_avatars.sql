-- Issue 20: a participant hides a conversation from their own list (it comes back by itself
-- with the next activity after the moment it was hidden); a group's avatar.
ALTER TABLE messaging.participants ADD COLUMN hidden_at timestamptz;
ALTER TABLE messaging.conversations
    ADD COLUMN avatar_id uuid REFERENCES messaging.attachments (id) ON DELETE SET NULL;
