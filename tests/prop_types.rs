//! Round trips and "never panics" for the config value types and the loader.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use std::path::Path;

use proptest::prelude::*;
use vmrun::config::{load_str, ByteSize, Duration, PciAddress};

proptest! {
    #[test]
    fn pci_address_round_trips(domain: u16, bus: u8, slot in 0u8..32, function in 0u8..8) {
        let a = PciAddress { domain, bus, slot, function };
        prop_assert_eq!(a.to_string().parse::<PciAddress>(), Ok(a));
    }

    #[test]
    fn byte_size_round_trips(bytes in 1u64..=u64::MAX) {
        let s = ByteSize::from_bytes(bytes);
        prop_assert_eq!(s.to_string().parse::<ByteSize>(), Ok(s));
    }

    #[test]
    fn duration_round_trips(millis in 0u64..=u64::MAX / 4) {
        let d: Duration = format!("{millis}ms").parse().expect("ms parses");
        prop_assert_eq!(d.to_string().parse::<Duration>(), Ok(d));
    }

    #[test]
    fn parsers_never_panic(s in "\\PC*") {
        let _ = s.parse::<PciAddress>();
        let _ = s.parse::<ByteSize>();
        let _ = s.parse::<Duration>();
        let _ = s.parse::<vmrun::config::PciIds>();
        let _ = s.parse::<vmrun::config::VmName>();
    }

    #[test]
    fn parsers_never_panic_on_near_misses(s in "[0-9a-fA-F:.xXkKmMgGtTsSh ]{0,24}") {
        let _ = s.parse::<PciAddress>();
        let _ = s.parse::<ByteSize>();
        let _ = s.parse::<Duration>();
    }

    #[test]
    fn loader_never_panics(s in "\\PC*") {
        let _ = load_str("p", Path::new("/nonexistent/p.toml"), &s);
    }

    #[test]
    fn loader_never_panics_on_toml_like_text(
        s in "(\\[{1,2}[a-z_]{1,8}\\]{1,2}\n|[a-z_]{1,10} = (\"[^\"\n]{0,10}\"|[0-9-]{1,5}|true|\\[[0-9, ]{0,8}\\]|\\{ ?[a-z]{1,4} = 1 ?\\})\n){0,12}"
    ) {
        let _ = load_str("p", Path::new("/nonexistent/p.toml"), &s);
    }
}
