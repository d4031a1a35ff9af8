//! `[tpm]`: an emulated TPM 2.0 (swtpm).

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireTpm {
    enabled: Option<bool>,
}

/// Off unless asked for.
pub(crate) fn check(t: WireTpm) -> bool {
    t.enabled.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use crate::config::vm::testing::check;

    #[test]
    fn tpm_is_off_unless_enabled() {
        assert!(!check("").expect("valid").tpm);
        assert!(check("[tpm]\nenabled = true\n").expect("valid").tpm);
    }
}
