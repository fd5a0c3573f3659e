//! The adversarial suite (issue 14): every boundary attacked through NGINX with real HTTP and
//! WebSocket clients against the test stack — what already held (the matrix) and what broke
//! (sessions, memberships, limits).
mod common;
#[path = "adversarial/limits.rs"]
mod limits;
#[path = "adversarial/matrix.rs"]
mod matrix;
#[path = "adversarial/membership.rs"]
mod membership;
#[path = "adversarial/sessions.rs"]
mod sessions;
