//! Mentions (issue 19): which participants a message names with `@username`, and whether it
//! says `@all` — parsed from the text by [`Mentions`], resolved against the conversation's
//! current participants where the message is written (the group commit's statement, an
//! edit), kept on the message (`mentions`, `mentions_all`) and, per mentioned participant,
//! in `messaging.mentions`, which the unread-mention counts read.

pub use super::domain::Mentions;

/// SQL for the participants of `conversation` (other than `sender`) whose usernames are in
/// `names` (space-separated, lower case): a sorted `uuid[]`, empty when none.
pub fn resolve_sql(conversation: &str, sender: &str, names: &str) -> String {
    format!(
        "CASE WHEN {names} = '' THEN '{{}}'::uuid[] ELSE coalesce((
             SELECT array_agg(mp.user_id ORDER BY mp.user_id)
             FROM messaging.participants mp
             JOIN auth.public_profiles u ON u.id = mp.user_id
             WHERE mp.conversation_id = {conversation} AND mp.left_at IS NULL
               AND mp.user_id <> {sender}
               AND lower(u.username) = ANY (string_to_array({names}, ' '))), '{{}}') END"
    )
}

/// SQL for whether a message that says `@all` (`wants_all`) mentions everyone: only in a
/// group (`is_group`), and only from an admin (`sender_role`) unless `members_may`.
pub fn all_sql(wants_all: &str, is_group: &str, sender_role: &str, members_may: &str) -> String {
    format!("({wants_all} AND {is_group} AND ({sender_role} = 'admin' OR {members_may}))")
}

/// SQL for a participant's unread mentions in a conversation (`p` the participant row, `c`
/// the conversation, `me` the user): mentions of them and `@all` messages of others after
/// their read marker, within what they can see.
pub fn unread_count_sql(me: &str) -> String {
    format!(
        "((SELECT count(*) FROM messaging.mentions mn
           WHERE mn.user_id = {me} AND mn.conversation_id = c.id
             AND mn.seq > p.last_read_seq AND mn.seq <= coalesce(p.visible_to_seq, c.last_seq))
        + (SELECT count(*) FROM messaging.messages ma
           WHERE ma.conversation_id = c.id AND ma.mentions_all
             AND ma.seq > GREATEST(p.last_read_seq, p.visible_from_seq - 1)
             AND ma.seq <= coalesce(p.visible_to_seq, c.last_seq)
             AND ma.sender_id IS DISTINCT FROM {me}
             AND NOT EXISTS (SELECT 1 FROM messaging.blocks bl
                             WHERE bl.blocker_id = {me} AND bl.blocked_id = ma.sender_id)))"
    )
}
