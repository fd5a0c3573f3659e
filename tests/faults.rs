//! The fault suites: replicas paused, stopped and lagging, the primary stopped, messaging
//! instances killed and restarted, every service restarted under notification work, the
//! SMTP relay down — each case stops servers the other suites rely on, so
//! they run in this binary of their own, after the others (cargo runs test binaries one at
//! a time), and one at a time within it ([`common::exclusive`]).
mod common;

#[path = "faults_suite/failover.rs"]
mod failover;
#[path = "faults_suite/faults.rs"]
mod faults;
#[path = "faults_suite/lifecycle.rs"]
mod lifecycle;
#[path = "faults_suite/mail.rs"]
mod mail;
#[path = "faults_suite/notify.rs"]
mod notify;
#[path = "faults_suite/replication.rs"]
mod replication;
