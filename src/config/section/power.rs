//! `[power]`: whether the host may suspend while the VM runs.

use serde::Deserialize;

use crate::config::checker::S;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WirePower {
    inhibit_sleep: S<bool>,
}

/// `inhibit_sleep` as written, else true exactly when the VM has
/// passed-through devices: a host suspend under a passed-through GPU leaves
/// it in a state the guest's driver does not recover from.
pub(crate) fn check(p: WirePower, has_hostdevs: bool) -> bool {
    p.inhibit_sleep.map_or(has_hostdevs, |s| s.into_inner())
}

#[cfg(test)]
mod tests {
    use crate::config::vm::testing::check;

    #[test]
    fn sleep_is_inhibited_by_default_only_with_hostdevs() {
        let plain = check("").expect("valid");
        assert!(!plain.inhibit_sleep);
        let gpu = check("[[hostdev]]\naddress = \"01:00.0\"\n").expect("valid");
        assert!(gpu.inhibit_sleep);
        let off = check("[[hostdev]]\naddress = \"01:00.0\"\n[power]\ninhibit_sleep = false\n")
            .expect("valid");
        assert!(!off.inhibit_sleep);
        assert!(
            check("[power]\ninhibit_sleep = true\n")
                .expect("valid")
                .inhibit_sleep
        );
    }
}
