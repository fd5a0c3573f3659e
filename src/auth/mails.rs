//! The account mails: each as a text and an HTML body, written to the outbox by the change
//! that causes it ([`crate::platform::mail`]). Links point at the web client
//! (`PUBLIC_URL`), with the token after `#`, so it never reaches a server log or a
//! `Referer` header.

use std::time::Duration;

use crate::platform::mail::{html, Mail};

fn minutes(d: Duration) -> u64 {
    d.as_secs().div_ceil(60)
}

/// "Confirm your address": at sign-up (`change` false) or for a new address (`change` true).
pub fn verify_email(to: &str, name: &str, link: &str, ttl: Duration, change: bool) -> Mail {
    let ask = if change {
        "Confirm this address to make it your Switchboard sign-in address. Your account keeps its old address until you do."
    } else {
        "Confirm this address to finish setting up your Switchboard account."
    };
    let lines = vec![
        format!("Hello {name},"),
        ask.to_owned(),
        format!(
            "The link works once, for {} minutes. If you did not ask for this, ignore this mail.",
            minutes(ttl)
        ),
    ];
    Mail {
        kind: "verify_email",
        to: to.to_owned(),
        subject: "Confirm your email address".into(),
        text: format!("{}\n\n{}\n\n{link}\n\n{}\n", lines[0], lines[1], lines[2]),
        html: html(
            "Confirm your email address",
            &lines,
            Some(("Confirm this address", link)),
        ),
        list_unsubscribe: None,
    }
}

/// To the old address, once a new one replaced it.
pub fn email_changed(to: &str, name: &str, new_email: &str) -> Mail {
    let lines = vec![
        format!("Hello {name},"),
        format!("Your Switchboard sign-in address was changed to {new_email}. Mail about your account now goes there."),
        "If you did not do this, reset your password and contact support at once.".to_owned(),
    ];
    Mail {
        kind: "email_changed",
        to: to.to_owned(),
        subject: "Your email address was changed".into(),
        text: lines.join("\n\n") + "\n",
        html: html("Your email address was changed", &lines, None),
        list_unsubscribe: None,
    }
}

/// "Reset your password".
pub fn password_reset(to: &str, name: &str, link: &str, ttl: Duration) -> Mail {
    let lines = vec![
        format!("Hello {name},"),
        "Someone asked to reset the password of your Switchboard account. Choose a new one here; every signed-in device will be signed out.".to_owned(),
        format!("The link works once, for {} minutes. If you did not ask for this, ignore this mail: your password stays as it is.", minutes(ttl)),
    ];
    Mail {
        kind: "password_reset",
        to: to.to_owned(),
        subject: "Reset your password".into(),
        text: format!("{}\n\n{}\n\n{link}\n\n{}\n", lines[0], lines[1], lines[2]),
        html: html(
            "Reset your password",
            &lines,
            Some(("Choose a new password", link)),
        ),
        list_unsubscribe: None,
    }
}

/// After a reset: every session ended.
pub fn password_changed(to: &str, name: &str) -> Mail {
    let lines = vec![
        format!("Hello {name},"),
        "The password of your Switchboard account was reset, and every device was signed out."
            .to_owned(),
        "If you did not do this, reset it again at once and contact support.".to_owned(),
    ];
    Mail {
        kind: "password_changed",
        to: to.to_owned(),
        subject: "Your password was reset".into(),
        text: lines.join("\n\n") + "\n",
        html: html("Your password was reset", &lines, None),
        list_unsubscribe: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_links_are_escaped_in_html() {
        let m = verify_email(
            "a@example.com",
            "<script>x</script>",
            "https://h/#verify-email=a\"b",
            Duration::from_secs(600),
            false,
        );
        assert!(!m.html.contains("<script>"));
        assert!(m.html.contains("&lt;script&gt;"));
        assert!(m.html.contains("href=\"https://h/#verify-email=a&quot;b\""));
        assert!(m.text.contains("https://h/#verify-email=a\"b"));
        assert!(m.text.contains("10 minutes"));
    }
}
