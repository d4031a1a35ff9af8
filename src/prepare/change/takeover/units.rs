//! Takeover's systemd units: the configured `stop_units` (and a display
//! manager named by unit) in the system manager, and the `user_units`
//! patterns in every running user manager. Undo starts each again.

use serde::{Deserialize, Serialize};

use super::{run_ok, systemctl, undo_run, TakeoverError, UNIT_TIMEOUT};
use crate::prepare::change::{StepReport, Undo};
use crate::prepare::journal::{Journal, Step};
use crate::prepare::Host;

/// The journal step: a systemd unit stopped (`user`: in that user's
/// manager).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopUnit {
    pub unit: String,
    pub user: Option<String>,
}

fn unit_active(host: &Host, user: Option<&str>, unit: &str) -> bool {
    host.kernel
        .run(
            &systemctl(user, &["is-active", "--quiet", unit]),
            UNIT_TIMEOUT,
        )
        .is_ok_and(|r| r.success)
}

/// Stops `unit` if it is active, journaled first.
pub fn stop_unit(
    host: &Host,
    journal: &mut Journal,
    user: Option<&str>,
    unit: &str,
) -> Result<(), TakeoverError> {
    if !unit_active(host, user, unit) {
        tracing::info!("takeover: {unit} is not active");
        return Ok(());
    }
    journal.record(&Step::StopUnit(StopUnit {
        unit: unit.to_string(),
        user: user.map(str::to_owned),
    }))?;
    // `systemctl stop` returns when the stop job is done: the unit's
    // processes have exited or been killed (systemd.kill(5)).
    run_ok(host, &systemctl(user, &["stop", unit]), UNIT_TIMEOUT)?;
    if unit_active(host, user, unit) {
        return Err(TakeoverError::Stuck {
            what: unit.to_string(),
            after: UNIT_TIMEOUT,
        });
    }
    tracing::info!("takeover: stopped {unit}");
    Ok(())
}

/// The users with a running systemd user manager (`/run/user/UID`).
fn session_users(host: &Host) -> Vec<String> {
    let mut users: Vec<String> = std::fs::read_dir(host.root.path("/run/user"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|uid| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
        })
        .map(|u| u.name)
        .collect();
    users.sort();
    users
}

/// Stops the active units matching `patterns` in every running user
/// manager.
pub fn stop_user_units(
    host: &Host,
    journal: &mut Journal,
    patterns: &[String],
) -> Result<(), TakeoverError> {
    if patterns.is_empty() {
        return Ok(());
    }
    for user in session_users(host) {
        let mut argv = systemctl(
            Some(&user),
            &["list-units", "--state=active", "--plain", "--no-legend"],
        );
        argv.extend(patterns.iter().cloned());
        let Ok(ran) = host.kernel.run(&argv, UNIT_TIMEOUT) else {
            continue;
        };
        for unit in ran
            .output
            .lines()
            .filter_map(|l| l.split_whitespace().next())
        {
            stop_unit(host, journal, Some(&user), unit)?;
        }
    }
    Ok(())
}

impl Undo for StopUnit {
    fn undo(&self, host: &Host) -> StepReport {
        let user = self.user.as_deref();
        let whose = user.map_or(String::new(), |u| format!(" (user {u})"));
        StepReport::logged(
            format!("{}{whose} started again", self.unit),
            undo_run(host, &systemctl(user, &["start", &self.unit]), UNIT_TIMEOUT),
        )
    }
}
