//! The SMTP relay down (issue 18): mail is delayed, never lost. The stack's SMTP server is
//! stopped, an account is made (its verification mail fails and waits in the outbox), the
//! server comes back, and the mail arrives — once. And a service stopped while it sends mail
//! records every mail the relay took, so none goes out again when its lease ends.

use std::{process::Command, time::Duration};

use super::failover::{environ, pid_of, signal};
use super::notify::{exited, restart_auth};
use crate::common::*;

fn pid_file() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var("SWITCHBOARD_DATA").expect("test.sh sets it"))
        .join("pids/smtp.pid")
}

fn smtp_port() -> u16 {
    std::env::var("SMTP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(11025)
}

async fn listening() -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", smtp_port()))
        .await
        .is_ok()
}

/// Starts the SMTP server as scripts/common.sh does, recording its pid where the stack's
/// shutdown finds it.
fn start_smtp() {
    let maildir = std::env::var("SWITCHBOARD_MAILDIR").expect("test.sh sets it");
    let server = std::env::var("SWITCHBOARD_SMTP_SERVER").expect("test.sh sets it");
    let mut child = Command::new(server)
        .args([
            "-n",
            "-l",
            &format!("127.0.0.1:{}", smtp_port()),
            "-c",
            "aiosmtpd.handlers.Mailbox",
            &maildir,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start aiosmtpd");
    std::fs::write(pid_file(), child.id().to_string()).expect("pid file");
    // It outlives this test (the stack stops it at the end); reaped when it exits.
    std::thread::spawn(move || child.wait());
}

#[tokio::test]
async fn mail_waits_in_the_outbox_while_the_relay_is_down_and_arrives_once_it_is_back() {
    let _alone = exclusive().await;
    let pid = std::fs::read_to_string(pid_file())
        .expect("smtp pid")
        .trim()
        .to_owned();
    assert!(Command::new("kill")
        .arg(&pid)
        .status()
        .expect("kill")
        .success());
    eventually(Duration::from_secs(10), || async {
        (!listening().await).then_some(())
    })
    .await;

    let user = register("relay_down").await;
    let address = format!("{}@example.com", user.username);
    // The worker tried, failed, and keeps the mail for a later attempt.
    let db = admin(false).await;
    eventually(Duration::from_secs(10), || async {
        let row = db
            .query_one(
                "SELECT count(*) FILTER (WHERE attempts >= 1 AND sent_at IS NULL AND last_error IS NOT NULL)
                 FROM auth.mail_outbox WHERE recipient = $1",
                &[&address],
            )
            .await
            .expect("outbox");
        (row.get::<_, i64>(0) == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        mails_to(&address).is_empty(),
        "a mail arrived with the relay down"
    );

    start_smtp();
    let mails = await_mails(&address, 1, Duration::from_secs(20)).await;
    assert_eq!(mails[0].subject, "Confirm your email address");
    // The relay has it; the worker records that just after.
    let attempts = eventually(Duration::from_secs(5), || async {
        let row = db
            .query_one(
                "SELECT sent_at IS NOT NULL AND body_text IS NULL, attempts
                 FROM auth.mail_outbox WHERE recipient = $1",
                &[&address],
            )
            .await
            .expect("outbox");
        // Sent, and its link no longer stored.
        row.get::<_, bool>(0).then(|| row.get::<_, i32>(1))
    })
    .await;
    assert!(attempts >= 2, "retried after the failure");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(mails_to(&address).len(), 1, "the mail arrived twice");
}

/// A service stopped mid-send records every mail its relay took before it exits: with each
/// record of a sent mail held 400 ms (a trigger on `auth.mail_outbox`; the worker records two
/// at a time, so most of a pass's records are still waiting when the relay has all its
/// mails), auth is stopped (TERM, as an orchestrator does) as soon as the relay has the
/// verification mails of ten new accounts, while some are not yet recorded, and once it has
/// exited every one of the ten rows says sent. (With the worker dropped at stop, as a task
/// with nothing to finish, the records still waiting were lost — 7 of the 10 in a run — and
/// those rows would have gone out again when their lease ended.)
#[tokio::test]
async fn a_service_stopped_while_sending_mail_records_every_mail_the_relay_took() {
    let _alone = exclusive().await;
    let db = admin(false).await;
    db.batch_execute(
        "CREATE OR REPLACE FUNCTION public.test_slow_mail_record() RETURNS trigger
           LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.4); RETURN NEW; END $$;
         DROP TRIGGER IF EXISTS test_slow_mail_record ON auth.mail_outbox;
         CREATE TRIGGER test_slow_mail_record BEFORE UPDATE ON auth.mail_outbox
           FOR EACH ROW WHEN (OLD.sent_at IS NULL AND NEW.sent_at IS NOT NULL
                              AND NEW.recipient LIKE 'stop_mail%')
           EXECUTE FUNCTION public.test_slow_mail_record()",
    )
    .await
    .expect("the slow-record trigger");
    let users = futures_util::future::join_all((0..10).map(|_| register("stop_mail"))).await;
    let addresses: Vec<String> = users
        .iter()
        .map(|u| format!("{}@example.com", u.username))
        .collect();
    // One scan of the maildir per look: the relay has a mail for every address.
    eventually(Duration::from_secs(20), || async {
        let received: Vec<String> = mails_to("stop_mail_").into_iter().map(|m| m.to).collect();
        addresses
            .iter()
            .all(|a| received.iter().any(|to| to.contains(a.as_str())))
            .then_some(())
    })
    .await;
    let pid = pid_of("auth");
    let env = environ(pid);
    signal(pid, "-TERM");
    // Records still waiting as the stop began (else this test proves nothing).
    let waiting_at_stop = unrecorded(&db, &addresses).await;
    exited(pid).await;
    let _ = db
        .batch_execute(
            "DROP TRIGGER IF EXISTS test_slow_mail_record ON auth.mail_outbox;
             DROP FUNCTION IF EXISTS public.test_slow_mail_record()",
        )
        .await;
    restart_auth(env).await;
    // Rows left unrecorded stay so until their lease ends (120 s): read after the restart.
    let left = unrecorded(&db, &addresses).await;
    assert!(
        !waiting_at_stop.is_empty(),
        "every mail was recorded before auth was told to stop: nothing was in flight"
    );
    assert!(
        left.is_empty(),
        "the relay took these mails and auth stopped without recording them: {left:?} \
         (of {} waiting when it was told to stop)",
        waiting_at_stop.len()
    );
    for a in &addresses {
        assert_eq!(mails_to(a).len(), 1, "{a} got its mail once");
    }
}

/// Which of `addresses` have an outbox row not recorded as sent.
async fn unrecorded(db: &tokio_postgres::Client, addresses: &[String]) -> Vec<String> {
    db.query(
        "SELECT recipient FROM auth.mail_outbox WHERE recipient = ANY($1) AND sent_at IS NULL",
        &[&addresses],
    )
    .await
    .map(|rows| rows.iter().map(|r| r.get(0)).collect())
    .unwrap_or_default()
}
