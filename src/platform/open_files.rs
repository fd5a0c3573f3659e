//! The open-files limit (RLIMIT_NOFILE, getrlimit(2)). Every connection a service holds — a
//! WebSocket, an HTTP keep-alive connection from NGINX, a database connection — is a file
//! descriptor, and past the soft limit accept(2) fails with EMFILE: the listener takes no
//! more connections, and those beyond wait unanswered in the kernel's backlog until their
//! clients give up. systemd (since v240) and containerd 2 start a process with a soft limit
//! of 1024 under a much higher hard one and leave raising it to the process, as a program that
//! does not use select(2) should (systemd.exec(5), `LimitNOFILE=`). So both services raise
//! their soft limit to the hard one at start.

/// Raises the soft open-files limit to the hard one and logs both (`open_files_soft`,
/// `open_files_hard`). A failure is logged, never fatal: the service still runs, holding
/// fewer connections.
pub fn raise() {
    let raised = rlimit::Resource::NOFILE
        .get()
        .and_then(|(before, hard)| Ok((before, rlimit::increase_nofile_limit(hard)?, hard)));
    match raised {
        Ok((before, soft, hard)) => tracing::info!(
            open_files_soft = soft,
            open_files_hard = hard,
            raised_from = before,
            "open-files limit"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "open-files limit not raised; connections past it wait unanswered"
        ),
    }
}
