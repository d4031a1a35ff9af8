//! `[shutdown]`: how long a clean guest shutdown may take.

use serde::Deserialize;

use crate::config::checker::{parts, Checker, S};
use crate::config::error::ProblemKind as K;
use crate::config::types::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireShutdown {
    timeout: S<Duration>,
}

/// The shutdown timeout; a minute when not written.
pub(crate) fn check(s: WireShutdown, v: &mut Checker<'_>) -> Duration {
    match s.timeout.map(parts) {
        Some((span, d)) => {
            if d.get().is_zero() {
                v.err("shutdown.timeout", span, K::ZeroTimeout);
            }
            d
        }
        None => Duration::from_secs(60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vm::testing::{check as check_file, errors};

    #[test]
    fn zero_shutdown_timeout_is_rejected() {
        assert_eq!(errors("[shutdown]\ntimeout = \"0s\"\n"), [K::ZeroTimeout]);
    }

    #[test]
    fn default_is_a_minute() {
        let c = check_file("").expect("valid");
        assert_eq!(c.shutdown_timeout, Duration::from_secs(60));
    }
}
