//! The benchmark report: `report.md` (tables, ratios to the raw limits, targets),
//! `results.json` (everything measured), and two PNG charts (send latency percentiles against
//! offered load; fan-out delivery latency distribution).

use std::path::Path;

use plotters::prelude::*;

use super::{Res, Results};

/// Targets from the benchmark issue, on a 2-core machine with everything on it.
const SEND_RATIO: f64 = 0.40;
const HISTORY_RATIO: f64 = 0.50;
const FANOUT_P99_MS: f64 = 15.0;
const FANOUT_SOCKETS: usize = 10_000;
const FANOUT_RATE: u64 = 1_000;
const IDLE_SOCKETS: usize = 50_000;
const IDLE_KIB: f64 = 20.0;
/// Overload: accepted sends keep p99 ≤ 100 ms and the stack is back within 5 s.
const OVERLOAD_P99_MS: f64 = super::overload::NORMAL_P99_MS;
const RECOVERY_SECS: f64 = 5.0;

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Shares (0–1) as whole percents: `"3%, 12%, 0%"`.
pub fn percents(shares: &[f64]) -> String {
    shares
        .iter()
        .map(|s| format!("{:.0}%", s * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A raw limit with its spread and what the host stole meanwhile: `"9000 inserts/s (median
/// of 6 runs, 8500–9400; host steal 0–12%)"`.
fn raw_cell(raw: &super::raw::Raw, unit: &str) -> String {
    let (lo, hi) = raw.spread();
    let steal = match raw.steal_range() {
        Some((least, most)) => {
            let (least, most) = ((least * 100.0).round(), (most * 100.0).round());
            if least == most {
                format!("; host steal {most:.0}%")
            } else {
                format!("; host steal {least:.0}–{most:.0}%")
            }
        }
        None => String::new(),
    };
    if raw.runs.len() > 1 {
        format!(
            "{:.0} {unit} (median of {} runs, {lo:.0}–{hi:.0}{steal})",
            raw.tps,
            raw.runs.len()
        )
    } else if steal.is_empty() {
        format!("{:.0} {unit}", raw.tps)
    } else {
        format!("{:.0} {unit} ({})", raw.tps, &steal[2..])
    }
}

/// CPU milliseconds per operation of `scenario` by process class (those of at least
/// 0.005 ms), from its CPU table row over `ops` operations (the successes the scenario
/// counted in the same window): `"messaging 0.190 ms, …"`.
fn cpu_per_op(r: &Results, scenario: &str, ops: u64) -> String {
    let Some(u) = r.cpu.iter().find(|u| u.scenario == scenario) else {
        return "not measured".into();
    };
    let classes: Vec<String> = u
        .by_class
        .iter()
        .map(|(class, secs)| (class, secs * 1000.0 / ops.max(1) as f64))
        .filter(|(_, ms)| *ms >= 0.005)
        .map(|(class, ms)| format!("{class} {ms:.3} ms"))
        .collect();
    if ops == 0 || classes.is_empty() {
        return "not measured".into();
    }
    classes.join(", ")
}

/// "Where the primary's time went": each scenario's longest-running statements
/// (benches/load/statements.rs); empty when none were recorded.
fn statements_section(r: &Results) -> String {
    if r.statements.is_empty() {
        return String::new();
    }
    let mut md = String::from("## Where the primary's time went\n\nThe services' statements that ran longest in total on the primary in each scenario, from `pg_stat_statements` (reset at the scenario's start; executor wall time, so a wait on a lock or the disk counts; planning not included). Share: of every service statement's executor time in the scenario.\n\n| scenario | statement | role | calls | total | per call | rows per call | share |\n|---|---|---|---|---|---|---|---|\n");
    for w in &r.statements {
        for st in &w.top {
            let calls = st.calls.max(1) as f64;
            md.push_str(&format!(
                "| {} | `{}` | {} | {} | {:.0} ms | {:.3} ms | {:.1} | {:.0}% |\n",
                w.scenario,
                st.text.replace('|', "\\|"),
                st.role.trim_start_matches("switchboard_"),
                st.calls,
                st.total_ms,
                st.total_ms / calls,
                st.rows as f64 / calls,
                100.0 * st.total_ms / w.all_ms.max(f64::EPSILON),
            ));
        }
    }
    md.push('\n');
    md
}

/// A run's attempts that were refused and requests that failed: "N refused, M failed"
/// (refused: 503 or 429 with `Retry-After`; failed: anything else, or refused at every
/// attempt), or "none".
fn unserved(run: &super::Run) -> String {
    match (run.refused, run.errors) {
        (0, 0) => "none".into(),
        (refused, 0) => format!("{refused} refused"),
        (0, failed) => format!("{failed} failed"),
        (refused, failed) => format!("{refused} refused, {failed} failed"),
    }
}

/// The mean sends per batch in `scenario` (one decimal), or "—" where not measured.
fn sends_per_batch(r: &Results, scenario: &str) -> String {
    r.batches
        .iter()
        .find(|b| b.scenario == scenario)
        .and_then(|b| b.mean())
        .map_or_else(|| "—".to_owned(), |mean| format!("{mean:.1}"))
}

/// Every process's CPU milliseconds per operation of `scenario` over `ops` operations, and
/// the primary's messaging backends' part: `"1.24 / 0.70 ms"`, or "—" where not measured.
fn cpu_per_send(r: &Results, scenario: &str, ops: u64) -> String {
    let Some(u) = r.cpu.iter().find(|u| u.scenario == scenario) else {
        return "—".into();
    };
    if ops == 0 {
        return "—".into();
    }
    let per_op = |secs: f64| secs * 1000.0 / ops as f64;
    let all = u.total();
    let primary: f64 = u
        .by_class
        .iter()
        .filter(|(class, _)| class.as_str() == PRIMARY_BACKENDS)
        .map(|(_, secs)| secs)
        .sum();
    format!("{:.2} / {:.2} ms", per_op(all), per_op(primary))
}

/// The process class of the messaging service's backends on the primary (`cpu.rs`).
const PRIMARY_BACKENDS: &str = "pg primary: switchboard_messaging backends";

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "missed"
    }
}

/// The report as Markdown.
pub fn markdown(r: &Results) -> String {
    let mut md = String::new();
    let plan = r.plan.clone().unwrap_or_else(|| super::Plan::new("short"));
    let m = &r.machine;
    let cores = m["cores"].as_u64().unwrap_or(2);
    md.push_str(&format!(
        "# Switchboard benchmark ({} mode)\n\nMachine: {} × {} cores, {} GiB, Linux {}, PostgreSQL {}; {}. Run {}.\n\n",
        plan.mode, m["cpu"].as_str().unwrap_or("?"), m["cores"], m["memory_gib"], m["kernel"].as_str().unwrap_or("?"),
        m["postgresql"].as_str().unwrap_or("?"), m["stack"].as_str().unwrap_or(""), m["date"].as_str().unwrap_or("")
    ));
    match m["generator_nice"].as_i64() {
        Some(n) if n < 0 => md.push_str(&format!(
            "The load generator (and pgbench, which it runs) ran at nice {n}, ahead of the stack for the cores: it stands for clients on other machines, and an open-loop send it issued late on saturated cores would count its own wait as the stack's latency (at nice 0, overload latencies at the generator ran seconds above NGINX's `request_time` for the same requests; at nice −10, within tens of milliseconds). Its CPU is still counted below.\n\n"
        )),
        Some(_) => md.push_str("The load generator ran at the stack's priority: on saturated cores its own scheduling delay counts as latency.\n\n"),
        None => {}
    }
    let send_ratio = ratio(r.send_max.per_sec, r.raw_insert.tps);
    let history_ratio = ratio(r.history.per_sec, r.raw_select.tps);
    let fanout = &r.fanout;
    let f = fanout.top();
    let i = &r.idle;
    md.push_str(
        "| scenario | result | raw limit (pgbench) | ratio | target |\n|---|---|---|---|---|\n",
    );
    md.push_str(&format!(
        "| send: {} users, closed loop, {} s | {:.0} messages/s, p50 {:.1} / p90 {:.1} / p99 {:.1} / max {:.1} ms, {} | {}, {} clients | {:.2} | ≥ {SEND_RATIO:.2}: {} |\n",
        plan.clients, plan.send_secs, r.send_max.per_sec, r.send_max.latency.p50, r.send_max.latency.p90, r.send_max.latency.p99,
        r.send_max.latency.max, unserved(&r.send_max), raw_cell(&r.raw_insert, "inserts/s"), r.raw_insert.clients, send_ratio, verdict(send_ratio >= SEND_RATIO)
    ));
    md.push_str(&format!(
        "| history: pages of 50, {} users, {} s | {:.0} pages/s, p50 {:.1} / p90 {:.1} / p99 {:.1} / max {:.1} ms, {} | {} on the replica | {:.2} | ≥ {HISTORY_RATIO:.2}: {} |\n",
        plan.clients, plan.history_secs, r.history.per_sec, r.history.latency.p50, r.history.latency.p90, r.history.latency.p99,
        r.history.latency.max, unserved(&r.history), raw_cell(&r.raw_select, "selects/s"), history_ratio, verdict(history_ratio >= HISTORY_RATIO)
    ));
    let at_target = fanout.sockets >= FANOUT_SOCKETS && f.offered_per_sec >= FANOUT_RATE;
    let fanout_ok = f.latency.p99 <= FANOUT_P99_MS && f.exact() && at_target;
    let fanout_verdict = if at_target {
        verdict(fanout_ok)
    } else {
        "not measured at the target load in this mode"
    };
    md.push_str(&format!(
        "| fan-out: {} sockets in {} groups of 10, {} messages/s offered ({:.0} sent), {} s | {} of {} deliveries ({} missing, {} duplicated, {} out of order), p50 {:.1} / p99 {:.1} / p99.9 {:.1} / max {:.1} ms (send start → socket); highest rate delivered exactly within p99 {FANOUT_P99_MS} ms: {} | — | — | p99 ≤ {FANOUT_P99_MS} ms at {FANOUT_SOCKETS} sockets, {FANOUT_RATE}/s: {} |\n",
        fanout.sockets, fanout.groups, f.offered_per_sec, f.sent_per_sec, plan.fanout_secs, f.deliveries, f.expected_deliveries,
        f.missing, f.duplicated, f.out_of_order,
        f.latency.p50, f.latency.p99, f.latency.p999, f.latency.max,
        fanout.sustained(FANOUT_P99_MS).map_or("none of the rates run".to_owned(), |r| format!("{}/s", r.offered_per_sec)),
        fanout_verdict
    ));
    let idle_ok = i.opened >= IDLE_SOCKETS && i.kib_per_socket <= IDLE_KIB;
    md.push_str(&format!(
        "| sockets: idle, authenticated, on one instance | {} of {} open; RSS {} → {} KiB: {:.1} KiB per socket | — | — | ≥ {IDLE_SOCKETS} at ≤ {IDLE_KIB} KiB: {} |\n\n",
        i.opened, i.target, i.rss_before_kib, i.rss_after_kib, i.kib_per_socket, verdict(idle_ok)
    ));
    let o = &r.overload;
    let overload_ok =
        o.lost == 0 && o.failed == 0 && o.accepted_latency.p99 <= OVERLOAD_P99_MS && recovered(o);
    if o.attempted > 0 {
        // Appended to the table above (its last row ended the table; reopen it).
        md.truncate(md.trim_end().len());
        md.push_str(&format!(
            "\n| overload: {:.0} sends/s offered (2 × {:.0}) for {} s, then {:.0}/s for {} s | {} accepted (p99 {:.1} ms), {} refused with Retry-After (p99 {:.1} ms), {} failed, {} lost; after: p99 {:.1} ms, {} not accepted ({} of them refused with Retry-After), {} | — | — | nothing lost, accepted p99 ≤ {OVERLOAD_P99_MS} ms, back within {RECOVERY_SECS} s: {} |\n\n",
            o.offered_per_sec, o.sustainable_per_sec, o.secs, o.after_per_sec, o.after_secs,
            o.accepted, o.accepted_latency.p99, o.refused, o.refused_latency.p99, o.failed, o.lost,
            o.after_latency.p99, o.after_failed, o.after_refused, recovery_text(o), verdict(overload_ok)
        ));
    }

    if !r.group_commit.is_empty() {
        md.push_str("## The database part alone\n\nThe group commit's own statements in the service's two round trips (pipelined: BEGIN, the lock, the batch statement and its queueing for notifications; then COMMIT and the WAL position), run by pgbench over 2 connections (the stack's writers: one per messaging instance) with batches of a fixed size from the benchmark's users — a send without HTTP, JSON, NGINX or fan-out. The stack's own batches are what queued while the previous one ran (see `switchboard_send_batch_size` in the metrics).\n\n| batch | sends/s | × the raw insert rate |\n|---|---|---|\n");
        for (batch, alone) in &r.group_commit {
            md.push_str(&format!(
                "| {batch} | {} | {:.2} |\n",
                raw_cell(alone, "sends/s"),
                ratio(alone.tps, r.raw_insert.tps)
            ));
        }
        md.push('\n');
    }

    md.push_str("## Send latency against offered load\n\n![send latency](send-latency.png)\n\nSends per batch: the mean over both instances' group commits in the step (`switchboard_send_batch_size`). CPU per send: every process's CPU in the step (see \"Where the cores went\") over the sends it accepted, and the primary's backends' share of it; an open loop's evenly spaced sends make smaller batches than the closed loop, and each batch costs the primary a fixed part whatever its size. Refused: attempts answered 503 or 429 with `Retry-After` (in the closed loop the user sends the same message again after the wait, as the web client does, up to 6 attempts); failed: requests given up.\n\n| offered | achieved | p50 | p90 | p99 | max | refused, failed | sends per batch | CPU per send: all / primary |\n|---|---|---|---|---|---|---|---|---|\n");
    for s in r.send_steps.iter().chain(std::iter::once(&r.send_max)) {
        md.push_str(&format!(
            "| {} | {:.0}/s | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} | {} |\n",
            s.offered_per_sec
                .map(|o| format!("{o:.0}/s"))
                .unwrap_or_else(|| "max (closed loop)".into()),
            s.per_sec,
            s.latency.p50,
            s.latency.p90,
            s.latency.p99,
            s.latency.max,
            unserved(s),
            sends_per_batch(r, &s.label),
            cpu_per_send(r, &s.label, s.latency.count),
        ));
    }
    md.push_str("\n## Fan-out by offered rate\n\nThe same sockets at each rate, each round started after presence traffic settled; deliveries checked by content against each conversation's stored `seq` range. The two split columns divide each delivery at its message's `created_at` (the start of the transaction that appended it): before it, the request, NGINX and the wait for a batch; after it, the append, its commit, the event bus, the listener, the socket and the load generator's read. Host steal: the share of the cores' time the hypervisor gave to other guests while the round's messages were sent (see below).\n\n| offered | sent | deliveries | missing | duplicated | out of order | p50 | p99 | p99.9 | max | to stored p50 / p99 | stored → socket p50 / p99 | host steal |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    // A run from before the split has no figures for it.
    let split = |l: &super::Lat| {
        if l.count == 0 {
            "—".to_owned()
        } else {
            format!("{:.1} / {:.1} ms", l.p50, l.p99)
        }
    };
    for rd in &fanout.rounds {
        md.push_str(&format!(
            "| {}/s | {:.0}/s | {} of {} | {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} | {:.0}% |\n",
            rd.offered_per_sec, rd.sent_per_sec, rd.deliveries, rd.expected_deliveries, rd.missing,
            rd.duplicated, rd.out_of_order, rd.latency.p50, rd.latency.p99, rd.latency.p999, rd.latency.max,
            split(&rd.to_stored), split(&rd.from_stored), rd.stolen_share * 100.0
        ));
    }
    if fanout.rounds.iter().any(|rd| rd.answer_to_socket.count > 0) {
        md.push_str("\nThe same deliveries split at their send's 201 answer as the load generator read it: from `created_at` to the answer, the append, its commit, the WAL position and the way back through NGINX (one figure per message); from the answer to the socket, what the fan-out takes beyond that (the event bus, the listener, the hub, the socket; 0 for a frame that came before its answer).\n\n| offered | stored → answer p50 / p99 | answer → socket p50 / p99 | arrived before the answer |\n|---|---|---|---|\n");
        for rd in &fanout.rounds {
            md.push_str(&format!(
                "| {}/s | {} | {} | {} of {} |\n",
                rd.offered_per_sec,
                split(&rd.stored_to_answer),
                split(&rd.answer_to_socket),
                rd.before_answer,
                rd.answer_to_socket.count
            ));
        }
    }
    if fanout.rounds.iter().any(|rd| rd.cpu.wall_secs > 0.0) {
        md.push_str(&format!(
            "\nThe cores each rate took while its messages were sent: busy = CPU seconds of every process class ÷ the round's wall seconds (the machine has {} cores), and each class's CPU per message sent (every message is delivered to {} sockets), biggest first.\n\n| offered | cores busy | CPU per message | by process class, per message |\n|---|---|---|---|\n",
            m["cores"],
            super::GROUP - 1
        ));
        for rd in fanout.rounds.iter().filter(|rd| rd.cpu.wall_secs > 0.0) {
            let messages = (rd.sent_per_sec * rd.cpu.wall_secs).max(1.0);
            let per = |secs: f64| secs * 1000.0 / messages;
            let classes: Vec<String> = rd
                .cpu
                .by_class
                .iter()
                .take(8)
                .map(|(c, secs)| format!("{c} {:.3}", per(*secs)))
                .collect();
            md.push_str(&format!(
                "| {}/s | {:.2} | {:.3} ms | {} ms |\n",
                rd.offered_per_sec,
                rd.cpu.total() / rd.cpu.wall_secs,
                per(rd.cpu.total()),
                classes.join(", ")
            ));
        }
    }
    md.push_str("\n## Fan-out delivery latency\n\n![fan-out latency](fanout-latency.png)\n\n");

    if !r.cpu.is_empty() {
        md.push_str("## Where the cores went\n\nCPU seconds (user + system) per process class while each scenario ran, from `/proc/<pid>/stat`; the machine has ");
        md.push_str(&format!(
            "{} cores, so a scenario of `s` seconds has at most {}·`s` to give. Host steal: the share of that the hypervisor gave to other guests while our processes wanted the cores (`steal` in `/proc/stat`): no process's time, but every process waited through it, so a scenario that lost a tenth to it ran on a smaller machine than the one named above.\n\n| scenario | wall | CPU | host steal | by process class |\n|---|---|---|---|---|\n",
            m["cores"], m["cores"]
        ));
        for u in &r.cpu {
            let classes: Vec<String> = u
                .by_class
                .iter()
                .map(|(c, secs)| format!("{c} {secs:.1}"))
                .collect();
            md.push_str(&format!(
                "| {} | {:.1} s | {:.1} s | {:.0}% | {} |\n",
                u.scenario,
                u.wall_secs,
                u.total(),
                u.stolen_share * 100.0,
                classes.join(", ")
            ));
        }
        md.push('\n');
    }

    md.push_str(&statements_section(r));
    md.push_str(&disk_section(r));

    md.push_str("## Where targets are missed, and why\n\n");
    let mut notes = Vec::new();
    if let Some(note) = steal_note(r) {
        notes.push(note);
    }
    if fanout.mail_left > 0 {
        notes.push(format!(
            "- fan-out: the rounds began with {} mails still queued after waiting {:.0} s for the outboxes: the mail worker and the SMTP server ran beside them.",
            fanout.mail_left, fanout.mail_wait_secs
        ));
    }
    if send_ratio < SEND_RATIO {
        let alone = r
            .group_commit
            .iter()
            .map(|(batch, a)| {
                format!(
                    "{:.2} × in batches of {batch}",
                    ratio(a.tps, r.raw_insert.tps)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let alone = if alone.is_empty() {
            "a rate not measured in this run".to_owned()
        } else {
            format!("{alone} (above)")
        };
        notes.push(format!("- send: {send_ratio:.2} of the raw insert rate, {:.0}% short of {SEND_RATIO:.2}. CPU per send: {}. Sends are group-committed (one transaction, one statement, one WAL flush per batch), but the batch statement still writes five rows per send where the raw insert writes one (the message; the conversation's `seq` and `rev`; the sender's read marker; the send budget; the notification outbox), and every conversation here has a single sender, so no two sends of a batch share those rows: the group commit alone reaches {alone}. Each send is also an HTTP request through NGINX, JSON in and out, a NOTIFY both instances' listeners fan out, and the load generator's own client, on the same {cores} cores as PostgreSQL.", (1.0 - send_ratio / SEND_RATIO) * 100.0, cpu_per_op(r, "send, closed loop", r.send_max.latency.count)));
    }
    if history_ratio < HISTORY_RATIO {
        notes.push(format!("- history: {history_ratio:.2} of the raw select rate, {:.0}% short of {HISTORY_RATIO:.2}. CPU per page: {}; the raw select's whole cost, PostgreSQL and pgbench together, is at most {:.3} ms ({} cores over its rate). Beyond the page's statement (planned once per connection), each page is the service's work (the access token, decoding 50 rows, JSON encoding), NGINX and the load generator's HTTP client, on the same cores as the replica.", (1.0 - history_ratio / HISTORY_RATIO) * 100.0, cpu_per_op(r, "history, pages of 50", r.history.latency.count), ratio(cores as f64 * 1000.0, r.raw_select.tps), cores));
    }
    if !fanout_ok && !at_target {
        notes.push(format!(
            "- fan-out: this mode runs a smaller load ({} sockets, {} messages/s: p99 {:.1} ms); the target is for {FANOUT_SOCKETS} sockets at {FANOUT_RATE}/s, which the full mode measures.",
            fanout.sockets, f.offered_per_sec, f.latency.p99
        ));
    } else if !fanout_ok {
        let share = ratio(f.offered_per_sec as f64, r.send_max.per_sec);
        notes.push(format!(
            "- fan-out: {} sockets at {} messages/s: p50 {:.1} ms, p99 {:.1} ms against ≤ {FANOUT_P99_MS} ms ({} messages/s is {:.0}% of the most this machine sends at all, {:.0}/s above; each is also {} socket deliveries, and the load generator's own {} sockets parse every frame, on the same {cores} cores). By rate, p99: {}. Latency counts from the send's start, so it holds the send's own commit; the send latency table above shows that tail alone at light load.",
            fanout.sockets, f.offered_per_sec, f.latency.p50, f.latency.p99,
            f.offered_per_sec, share * 100.0, r.send_max.per_sec, super::GROUP - 1, fanout.sockets,
            fanout.rounds.iter().map(|rd| format!("{:.1} ms at {}/s", rd.latency.p99, rd.offered_per_sec)).collect::<Vec<_>>().join(", ")
        ));
    }
    if o.attempted > 0 && !overload_ok {
        let accepted_rate = ratio(o.accepted as f64, o.secs as f64);
        let headroom = if accepted_rate > r.send_max.per_sec {
            format!(" It accepted {accepted_rate:.0} sends/s, more than the closed loop's {:.0}/s (bigger batches), leaving the {cores} cores no headroom.", r.send_max.per_sec)
        } else {
            format!(
                " It accepted {accepted_rate:.0} sends/s (the closed loop: {:.0}/s).",
                r.send_max.per_sec
            )
        };
        let before_edge = if o.accepted_latency.p99 > OVERLOAD_P99_MS
            && o.refused_latency.p99 >= o.accepted_latency.p99 * 0.5
        {
            " Refusals were about as slow as acceptances, though the service answers a refusal at once: the time went outside the admission queue — waiting for the saturated cores, which NGINX, the load generator and the services share, or in the kernel's queues before NGINX."
        } else {
            ""
        };
        // From which second on every second's accepted p99 was within the target.
        let by_second = &o.accepted_p99_by_second;
        let settled =
            (0..by_second.len()).find(|&s| by_second[s..].iter().all(|p| *p <= OVERLOAD_P99_MS));
        let list = by_second
            .iter()
            .enumerate()
            .map(|(s, p)| with_stall(*p, &o.disk_during, s))
            .collect::<Vec<_>>()
            .join(", ");
        let when = match settled {
            _ if by_second.is_empty() => String::new(),
            Some(0) => String::new(),
            Some(s) => format!(
                " Per second, the accepted p99 was {list} ms: within {OVERLOAD_P99_MS:.0} ms from second {} on, so the tail is the onset, while the limit is cut from the queue's capacity to what the cores serve.",
                s + 1
            ),
            None => format!(" Per second, the accepted p99 was {list} ms."),
        };
        let after = after_by_second(o);
        let disk = if o.disk_during.stalls.is_empty() && o.disk_after.stalls.is_empty() {
            String::new()
        } else {
            format!(
                " The disk's own syncs (above) stalled during the overload: {}; during the half load after it: {} — every commit in flight waits out such a stall.",
                o.disk_during.stall_list(4),
                o.disk_after.stall_list(4)
            )
        };
        notes.push(format!(
            "- overload: {} lost, {} failed without a clean refusal, accepted p99 {:.1} ms, refused p99 {:.1} ms; at half load after it {}. Admission control refuses a send at once when its instance holds as many as its limit allows; the limit is cut when a batch's oldest send had waited past `SEND_QUEUE_MAX_WAIT_MS` (from NGINX's `X-Request-Start` stamp until its batch was taken, less the part of that wait the batch before it spent committing: a WAL flush, stalls included, is the disk's time, not the queue's), and grows back while waits are shorter (AIMD).{headroom}{when}{before_edge}{after}{disk}",
            o.lost, o.failed, o.accepted_latency.p99, o.refused_latency.p99, recovery_text(o)
        ));
    } else if o.attempted > 0 && (!o.normal_from().1.is_empty() || o.recovery_secs > 0.0) {
        // Met, but not without a slow second: say which, and why it was counted normal.
        notes.push(format!(
            "- overload (met): at half load after it {}.{}",
            recovery_text(o),
            after_by_second(o)
        ));
    }
    if !idle_ok {
        let why = if i.open_files_limit > 0 && (i.open_files_limit as usize) < IDLE_SOCKETS + 100 {
            format!("this machine's hard open-files limit is {} per process (RLIMIT_NOFILE, not raisable here), so one instance cannot hold {IDLE_SOCKETS} sockets", i.open_files_limit)
        } else {
            format!("the run asked for {} sockets", i.target)
        };
        notes.push(format!(
            "- sockets: {} open ({:.0}% of {IDLE_SOCKETS}) at {:.1} KiB each: {why}{}.",
            i.opened,
            i.opened as f64 * 100.0 / IDLE_SOCKETS as f64,
            i.kib_per_socket,
            if i.kib_per_socket <= IDLE_KIB {
                "; memory per socket is within the target, so 50k would need about ".to_owned()
                    + &format!("{:.0} MiB", i.kib_per_socket * IDLE_SOCKETS as f64 / 1024.0)
            } else {
                String::new()
            }
        ));
        if let Some(e) = &i.first_error {
            notes.push(format!("  First failure: `{e}`."));
        }
    }
    if notes.is_empty() {
        notes.push("- none: every target is met.".into());
    }
    md.push_str(&notes.join("\n"));
    let runs = plan.raw_runs.max(1);
    // Either limit says how pgbench ran (`BENCH_ONLY=history` takes only the select's).
    let ran = if r.raw_insert.clients > 0 {
        &r.raw_insert
    } else {
        &r.raw_select
    };
    md.push_str(&format!(
        "\n\n## Raw limits\n\nLike for like with the stack: `pgbench -n -M prepared -c {} -T {}` as the superuser over TCP on loopback with `sslmode={}` ({}), {runs} run(s) before and {runs} after the scenario, the median of all; each client writes or reads its own benchmark user's conversation (looked up once per client).\n\nInsert (primary, into `bench.messages`: a copy of `messaging.messages` with the same columns, generated search vector, indexes and foreign keys, UUIDv7 ids and a `client_id` as the service writes them):\n\n```sql\n{}\n```\n\nPage select (replica):\n\n```sql\n{}\n```\n",
        ran.clients,
        plan.raw_secs,
        ran.sslmode,
        if ran.sslmode == "disable" {
            "plaintext, unlike the services, whose connections all use TLS"
        } else {
            "TLS, as every service connection"
        },
        r.raw_insert.script,
        r.raw_select.script
    ));
    md
}

fn font() {
    // plotters draws text with ab_glyph from a font we hand it (no fontconfig).
    for path in [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ] {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
            return;
        }
    }
}

type Plot = Result<(), Box<dyn std::error::Error>>;

fn send_chart(path: &Path, r: &Results) -> Plot {
    let mut points: Vec<(f64, &super::Run)> = r
        .send_steps
        .iter()
        .map(|s| (s.offered_per_sec.unwrap_or(s.per_sec), s))
        .collect();
    points.push((r.send_max.per_sec, &r.send_max));
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max) * 1.1;
    let y_max = points.iter().map(|p| p.1.latency.p99).fold(1.0, f64::max) * 1.2;
    let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "send: latency percentiles against offered load",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("offered load (messages/s; the last point is the closed-loop maximum)")
        .y_desc("latency (ms)")
        .draw()?;
    type Pick = fn(&super::Lat) -> f64;
    let series: [(&str, RGBColor, Pick); 3] = [
        ("p50", BLUE, |l| l.p50),
        ("p90", GREEN, |l| l.p90),
        ("p99", RED, |l| l.p99),
    ];
    for (name, color, pick) in series {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|(x, s)| (*x, pick(&s.latency))),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .iter()
                .map(|(x, s)| Circle::new((*x, pick(&s.latency)), 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()?;
    root.present()?;
    Ok(())
}

fn fanout_chart(path: &Path, r: &Results) -> Plot {
    let f = r.fanout.top();
    let x_max = f.buckets.last().map(|b| b.0).unwrap_or(1.0);
    let y_max = f.buckets.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64 * 1.1;
    let width = f.buckets.first().map(|b| b.0).unwrap_or(1.0);
    let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "fan-out: {} sockets, {}/s — p50 {:.1} ms, p99 {:.1} ms",
                r.fanout.sockets, f.offered_per_sec, f.latency.p50, f.latency.p99
            ),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("send start → received at the socket (ms), up to p99.9")
        .y_desc("deliveries")
        .draw()?;
    chart.draw_series(f.buckets.iter().map(|(hi, n)| {
        Rectangle::new(
            [(hi - width, 0.0), (*hi, *n as f64)],
            BLUE.mix(0.6).filled(),
        )
    }))?;
    for (q, color) in [(f.latency.p50, GREEN), (f.latency.p99, RED)] {
        chart.draw_series(LineSeries::new(
            vec![(q, 0.0), (q, y_max)],
            color.stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// Writes `report.md`, `results.json` and the charts into `out`.
pub fn write(out: &Path, r: &Results) -> Res<()> {
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(r)?)?;
    std::fs::write(out.join("report.md"), markdown(r))?;
    font();
    if let Err(e) = send_chart(&out.join("send-latency.png"), r) {
        eprintln!("send chart: {e}");
    }
    if let Err(e) = fanout_chart(&out.join("fanout-latency.png"), r) {
        eprintln!("fan-out chart: {e}");
    }
    Ok(())
}

/// Where the host stole more than [`STEAL_NOTED`] of the cores (scenarios, fan-out rounds,
/// raw runs): `None` when it never did.
fn steal_note(r: &Results) -> Option<String> {
    let raw = |name: &str, raw: &super::raw::Raw| {
        raw.steal_range()
            .map(|(_, most)| (format!("{name} (its worst run)"), most))
    };
    let stolen: Vec<String> = r
        .cpu
        .iter()
        .map(|u| (u.scenario.clone(), u.stolen_share))
        .chain(r.fanout.rounds.iter().map(|rd| {
            (
                format!("fan-out at {}/s", rd.offered_per_sec),
                rd.stolen_share,
            )
        }))
        .chain(raw("the raw insert limit", &r.raw_insert))
        .chain(raw("the raw select limit", &r.raw_select))
        .filter(|(_, share)| *share > STEAL_NOTED)
        .map(|(name, share)| format!("{name} {:.0}%", share * 100.0))
        .collect();
    (!stolen.is_empty()).then(|| {
        format!(
            "- the host: the hypervisor gave other guests more than {:.0}% of this machine's cores during {}. Those figures were taken on less machine than the rest: a ratio to a raw limit taken under a different steal, and a tail taken under any, say as much about the host's neighbours as about the stack.",
            STEAL_NOTED * 100.0,
            stolen.join(", ")
        )
    })
}

/// The share of the cores stolen by the host above which the report names a scenario.
const STEAL_NOTED: f64 = 0.05;

/// The disk's sync latency in each scenario, its phases and fan-out rounds (empty when the
/// run had no probe).
fn disk_section(r: &Results) -> String {
    let o = &r.overload;
    let windows: Vec<&super::disk::Window> = r
        .disk
        .iter()
        // The overload's two phases have windows of their own (below).
        .filter(|w| w.scenario != "overload" || o.disk_during.syncs == 0)
        .chain(r.fanout.rounds.iter().map(|round| &round.disk))
        .chain([&o.disk_during, &o.disk_after])
        .filter(|w| w.syncs > 0)
        .collect();
    if windows.is_empty() {
        return String::new();
    }
    let mut md = format!(
        "## The disk under the database\n\nEvery commit waits for its WAL to reach the disk (`synchronous_commit = on`), so no send answers faster than the disk syncs, and a disk that stalls holds every send in flight. A probe wrote 8 KiB and `fdatasync`ed it, the syncs 10 ms apart, on PostgreSQL's file system for the whole run (`benches/load/disk.rs`; up to 100 more flushes a second on the database's disk, in the raw limits as in the scenarios; `BENCH_DISK_PROBE=0` turns it off); stalls are syncs over {:.0} ms, at seconds from the start of the scenario, phase or round (negative: begun before it).\n\n| scenario | syncs | p50 | p99 | max | stalls |\n|---|---|---|---|---|---|\n",
        super::disk::STALL_MS
    );
    for w in windows {
        md.push_str(&format!(
            "| {} | {} | {:.2} ms | {:.2} ms | {:.1} ms | {} |\n",
            w.scenario,
            w.syncs,
            w.p50_ms,
            w.p99_ms,
            w.max_ms,
            w.stall_list(6)
        ));
    }
    md.push('\n');
    md
}

/// A per-second p99 (ms), with the disk's longest stall in that second when there was one:
/// "253 (disk stalled 165 ms)".
fn with_stall(p99: f64, disk: &super::disk::Window, second: usize) -> String {
    match disk.stalled_in(second as u64) {
        Some(ms) => format!("{p99:.0} (disk stalled {ms:.0} ms)"),
        None => format!("{p99:.0}"),
    }
}

/// Whether the stack was back to normal within [`RECOVERY_SECS`] of the overload's end: by
/// the per-second rule ([`super::overload::Overload::normal_from`]) when the run has
/// per-second figures, else (older runs) by its last slow send.
fn recovered(o: &super::overload::Overload) -> bool {
    if o.after_p99_by_second.is_empty() {
        return o.recovery_secs <= RECOVERY_SECS;
    }
    o.normal_from().0.is_some_and(|s| s <= RECOVERY_SECS)
}

/// The half-load phase's return to normal, in words.
fn recovery_text(o: &super::overload::Overload) -> String {
    let last = if o.recovery_secs > 0.0 {
        format!(
            "the last send over {OVERLOAD_P99_MS:.0} ms or not accepted at {:.1} s",
            o.recovery_secs
        )
    } else {
        format!("no send over {OVERLOAD_P99_MS:.0} ms or not accepted")
    };
    if o.after_p99_by_second.is_empty() {
        return format!("back to normal after {:.1} s ({last})", o.recovery_secs);
    }
    let (normal_from, excused) = o.normal_from();
    let excused = if excused.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = excused.iter().map(|s| (s + 1).to_string()).collect();
        format!(
            "; second(s) {} counted normal though slower: the disk stalled in them, every send accepted",
            list.join(", ")
        )
    };
    match normal_from {
        Some(s) => format!(
            "normal (every send accepted, p99 ≤ {OVERLOAD_P99_MS:.0} ms) from its second {:.0} on, {s:.0} s after the overload{excused}; {last}",
            s + 1.0
        ),
        None => format!(
            "not normal by the end of its {} s{excused}; {last}",
            o.after_secs
        ),
    }
}

/// The half-load phase's accepted p99 per second, each with the disk's stall in it and its
/// sends not accepted (" At half load afterwards, …"; empty for older runs).
fn after_by_second(o: &super::overload::Overload) -> String {
    if o.after_p99_by_second.is_empty() {
        return String::new();
    }
    let list = o
        .after_p99_by_second
        .iter()
        .zip(&o.after_not_accepted_by_second)
        .enumerate()
        .map(|(s, (p, n))| {
            let p = if *p == 0.0 && *n > 0 {
                "—".to_owned()
            } else {
                with_stall(*p, &o.disk_after, s)
            };
            if *n > 0 {
                format!("{p} ({n} not accepted)")
            } else {
                p
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(" At half load afterwards, the accepted p99 per second was {list} ms.")
}
