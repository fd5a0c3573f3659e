//! The adversarial suite (issue 14): every boundary attacked through NGINX — what already
//! held (the matrix) and what broke (sessions, memberships, limits).
mod group_commit;
mod limits;
mod matrix;
mod membership;
mod sessions;
