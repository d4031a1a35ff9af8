//! `[cpu]`: model, topology, flags, pinning and hypervisor hiding.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::checker::{parts, Checker, S};
use crate::config::error::ProblemKind as K;
use crate::config::section::qemu::Accel;

/// QEMU's `-smp` limit for q35 with x2apic; also keeps the product in `u32`.
pub(crate) const MAX_VCPUS: u64 = 1024;

/// QEMU's `hv-vendor-id` takes at most 12 characters.
const MAX_VENDOR_ID: usize = 12;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireCpu {
    model: S<String>,
    sockets: S<u32>,
    dies: S<u32>,
    cores: S<u32>,
    threads: S<u32>,
    #[serde(default)]
    features: Vec<Spanned<String>>,
    pin: S<Vec<Spanned<u32>>>,
    #[serde(default)]
    hide_hypervisor: bool,
    vendor_id: S<String>,
    hyperv: S<bool>,
    isolate: S<bool>,
    emulator_pin: S<Vec<Spanned<u32>>>,
    governor: S<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cpu {
    /// `-cpu` model; `host` by default.
    pub model: String,
    pub topology: Topology,
    /// Extra `-cpu` flags, `+name` / `-name` / `name=value` as written.
    pub features: Vec<String>,
    /// Host CPU per vCPU, in vCPU order; empty means no pinning.
    pub pin: Vec<u32>,
    pub hide_hypervisor: bool,
    /// `hv-vendor-id`, at most 12 characters.
    pub vendor_id: Option<String>,
    pub hyperv: bool,
    /// While the VM runs, host tasks, unbound workqueues and IRQs keep off
    /// the pinned CPUs (needs `pin`).
    pub isolate: bool,
    /// Host CPUs for QEMU's threads other than the vCPUs, as written; with
    /// `isolate` and none written, the plan takes the CPUs not in `pin`.
    pub emulator_pin: Vec<u32>,
    /// cpufreq governor of the pinned CPUs while the VM runs.
    pub governor: Option<String>,
}

/// The guest's CPU topology; `vcpus()` is their product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Topology {
    pub sockets: u32,
    /// `None` when not written: then `dies` is left out of `-smp`.
    pub dies: Option<u32>,
    pub cores: u32,
    pub threads: u32,
}

impl Topology {
    pub fn vcpus(&self) -> u32 {
        self.sockets * self.dies.unwrap_or(1) * self.cores * self.threads
    }

    const SINGLE: Self = Self {
        sockets: 1,
        dies: None,
        cores: 1,
        threads: 1,
    };
}

pub(crate) fn check(c: S<WireCpu>, accel: Accel, v: &mut Checker<'_>) -> Cpu {
    let (span, c) = c.map(parts).unwrap_or_default();
    let mut count = |key: &str, n: S<u32>| -> Option<u32> {
        let (s, n) = parts(n?);
        if n == 0 {
            v.err(format!("cpu.{key}"), s, K::ZeroCount);
        }
        Some(n)
    };
    let sockets = count("sockets", c.sockets).unwrap_or(1);
    let dies = count("dies", c.dies);
    let cores = count("cores", c.cores).unwrap_or(1);
    let threads = count("threads", c.threads).unwrap_or(1);
    let product = [sockets, dies.unwrap_or(1), cores, threads]
        .iter()
        .fold(1u64, |acc, n| acc.saturating_mul(u64::from(*n)));
    let topology_ok = (1..=MAX_VCPUS).contains(&product);
    if product > MAX_VCPUS {
        v.err("cpu", span, K::TooManyVcpus(product));
    }
    let topology = if topology_ok {
        Topology {
            sockets,
            dies,
            cores,
            threads,
        }
    } else {
        Topology::SINGLE
    };
    let pin = c
        .pin
        .map(|p| pin_list(p, topology_ok.then_some(topology.vcpus()), v))
        .unwrap_or_default();
    let hide_hypervisor = c.hide_hypervisor;
    let hyperv = c.hyperv.as_ref().is_some_and(|h| *h.get_ref());
    if let (Some(h), true, Accel::Tcg) = (&c.hyperv, hyperv, accel) {
        // The hv-* CPU properties are KVM's: under TCG QEMU refuses them
        // (hv-vpindex first) and the VM never starts.
        v.err("cpu.hyperv", h.span(), K::HypervWithTcg);
    }
    let features = features(c.features, hyperv, v);
    let vendor_id = c.vendor_id.map(|id| {
        let (s, id) = parts(id);
        let len = id.chars().count();
        if !is_vendor_id(&id) {
            v.err("cpu.vendor_id", s.clone(), K::BadVendorId(id.clone()));
        } else if len > MAX_VENDOR_ID {
            v.err("cpu.vendor_id", s.clone(), K::VendorIdTooLong(len));
        } else if id.is_empty() {
            v.err("cpu.vendor_id", s.clone(), K::Empty);
        }
        if !hide_hypervisor && !hyperv {
            v.err("cpu.vendor_id", s, K::VendorIdUnused);
        }
        id
    });
    let isolate = c.isolate.map(|i| {
        let (s, on) = parts(i);
        if on && pin.is_empty() {
            v.err("cpu.isolate", s, K::IsolateWithoutPin);
        }
        on
    });
    let emulator_pin = c
        .emulator_pin
        .map(|p| host_cpus("cpu.emulator_pin", p, v))
        .unwrap_or_default();
    let governor = c.governor.map(|g| {
        let (s, g) = parts(g);
        if !is_governor(&g) {
            v.err("cpu.governor", s, K::BadGovernor(g.clone()));
        }
        g
    });
    let model = v.non_empty_or("cpu.model", c.model.clone(), "host");
    if let Some(m) = c
        .model
        .filter(|_| !model.trim().is_empty() && !is_cpu_name(&model))
    {
        v.err("cpu.model", m.span(), K::BadCpuModel(model.clone()));
    }
    Cpu {
        model,
        topology,
        features,
        pin,
        hide_hypervisor,
        vendor_id,
        hyperv,
        isolate: isolate.unwrap_or(false),
        emulator_pin,
        governor,
    }
}

/// A cpufreq governor's name as the kernel spells them
/// (`scaling_available_governors`): lower-case letters, digits, `_`.
fn is_governor(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A list of host CPUs, none twice, not empty.
fn host_cpus(key: &str, list: Spanned<Vec<Spanned<u32>>>, v: &mut Checker<'_>) -> Vec<u32> {
    let (span, list) = parts(list);
    if list.is_empty() {
        v.err(key, span, K::Empty);
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for item in list {
        let (s, cpu) = parts(item);
        if !seen.insert(cpu) {
            v.err(key, s, K::DuplicatePin(cpu));
        }
        out.push(cpu);
    }
    out
}

/// The `-cpu` flags as written. With `hyperv`, none may clear CPUID's
/// hypervisor bit (leaf 1, ECX bit 31): Windows reads the Hyper-V leaves
/// only when that bit is set, so it would ignore every enlightenment.
fn features(list: Vec<Spanned<String>>, hyperv: bool, v: &mut Checker<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for f in list {
        let (s, f) = parts(f);
        if !is_cpu_flag(&f) {
            v.err("cpu.features", s, K::BadCpuFeature(f.clone()));
        } else if hyperv && clears_hypervisor_bit(&f) {
            v.err("cpu.features", s, K::HypervisorBitCleared(f.clone()));
        }
        out.push(f);
    }
    out
}

// QEMU splits `-cpu MODEL,FLAGS` at the first comma, then the flags at every
// comma with no `,,` escape (target/i386/cpu.c, `x86_cpu_parse_featurestr`
// uses strtok), then each flag at its first `=`. A value holding `,` would
// therefore add a flag of its own (`kvm=on` undoing `hide_hypervisor`), so
// every piece of `-cpu` is checked to be one token.

/// A CPU model or property name: letters, digits, `-`, `_`, `.`.
fn is_cpu_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// One `-cpu` flag: `+name`, `-name`, `name` or `name=value`, the value
/// printable ASCII without `,` or spaces.
fn is_cpu_flag(flag: &str) -> bool {
    if let Some(name) = flag.strip_prefix(['+', '-']) {
        return is_cpu_name(name);
    }
    match flag.split_once('=') {
        Some((name, value)) => {
            is_cpu_name(name)
                && !value.is_empty()
                && value.chars().all(|c| c.is_ascii_graphic() && c != ',')
        }
        None => is_cpu_name(flag),
    }
}

/// `hv-vendor-id`'s value: printable ASCII or spaces, without `,` or `=`.
fn is_vendor_id(id: &str) -> bool {
    id.chars()
        .all(|c| (c.is_ascii_graphic() || c == ' ') && c != ',' && c != '=')
}

/// `-hypervisor`, or `hypervisor=` with one of the spellings QEMU's boolean
/// properties read as false.
fn clears_hypervisor_bit(feature: &str) -> bool {
    let f = feature.trim();
    f == "-hypervisor"
        || f.strip_prefix("hypervisor=")
            .is_some_and(|b| matches!(b, "off" | "false" | "no" | "n"))
}

/// One host CPU per vCPU (`vcpus` is `None` when the topology is already
/// reported as impossible), none twice.
fn pin_list(pin: Spanned<Vec<Spanned<u32>>>, vcpus: Option<u32>, v: &mut Checker<'_>) -> Vec<u32> {
    let (pin_span, list) = parts(pin);
    if let Some(vcpus) = vcpus.filter(|n| list.len() as u64 != u64::from(*n)) {
        let got = list.len();
        v.err("cpu.pin", pin_span, K::PinCount { got, vcpus });
    }
    let mut seen = HashSet::new();
    let mut pin = Vec::new();
    for item in list {
        let (s, host) = parts(item);
        if !seen.insert(host) {
            v.err("cpu.pin", s, K::DuplicatePin(host));
        }
        pin.push(host);
    }
    pin
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vm::testing::{assert_problems, check, errors};

    #[test]
    fn each_broken_rule_is_reported() {
        assert_problems(&[
            ("[cpu]\ncores = 0\n", &[K::ZeroCount]),
            (
                "[cpu]\ncores = 2\nthreads = 2\npin = [1, 2, 3]\n",
                &[K::PinCount { got: 3, vcpus: 4 }],
            ),
            ("[cpu]\ncores = 2\npin = [3, 3]\n", &[K::DuplicatePin(3)]),
            (
                "[cpu]\nhyperv = true\nvendor_id = \"0123456789abc\"\n",
                &[K::VendorIdTooLong(13)],
            ),
            ("[cpu]\nvendor_id = \"abc\"\n", &[K::VendorIdUnused]),
            (
                "[cpu]\nhyperv = true\n[qemu]\naccel = \"tcg\"\n",
                &[K::HypervWithTcg],
            ),
            ("[cpu]\nmodel = \" \"\n", &[K::Empty]),
            (
                "[cpu]\nhide_hypervisor = true\nvendor_id = \"a,kvm=on\"\n",
                &[K::BadVendorId("a,kvm=on".into())],
            ),
            (
                "[cpu]\nmodel = \"host,kvm=on\"\n",
                &[K::BadCpuModel("host,kvm=on".into())],
            ),
            ("[cpu]\nisolate = true\n", &[K::IsolateWithoutPin]),
            ("[cpu]\nemulator_pin = [0, 0]\n", &[K::DuplicatePin(0)]),
            ("[cpu]\nemulator_pin = []\n", &[K::Empty]),
            (
                "[cpu]\ngovernor = \"perf ormance\"\n",
                &[K::BadGovernor("perf ormance".into())],
            ),
        ]);
    }

    #[test]
    fn each_feature_must_be_one_flag() {
        for bad in [
            "+a,kvm=on",
            "kvm=on,x",
            "+",
            "-",
            "a=",
            "=on",
            "a b",
            "+a=b",
            "l3=o n",
            "",
        ] {
            let text = format!("[cpu]\nfeatures = [\"{bad}\"]\n");
            assert_eq!(errors(&text), [K::BadCpuFeature(bad.into())], "{bad}");
        }
        let good = [
            "+topoext",
            "-hypervisor",
            "l3-cache=on",
            "hv-vendor-id=ab.c",
            "x_y",
        ];
        let text = format!("[cpu]\nfeatures = {good:?}\n");
        assert_eq!(check(&text).expect("valid").cpu.features, good);
    }

    #[test]
    fn vendor_id_takes_printable_characters_without_comma_or_equals() {
        for bad in ["a,b", "a=b", "é"] {
            let text = format!("[cpu]\nhyperv = true\nvendor_id = \"{bad}\"\n");
            assert!(
                matches!(errors(&text)[..], [K::BadVendorId(_)]),
                "{bad}: {:?}",
                errors(&text)
            );
        }
        let c = check("[cpu]\nhyperv = true\nvendor_id = \"Auth AMD_1-x\"\n");
        assert_eq!(
            c.expect("valid").cpu.vendor_id.as_deref(),
            Some("Auth AMD_1-x")
        );
    }

    #[test]
    fn huge_topology_is_rejected_without_overflow() {
        let e = errors("[cpu]\nsockets = 4000000000\ncores = 4000000000\n");
        assert!(matches!(e[..], [K::TooManyVcpus(_)]));
    }

    #[test]
    fn dies_count_into_vcpus() {
        let c = check("[cpu]\nsockets = 2\ndies = 2\ncores = 2\npin = [0,1,2,3,4,5,6,7]\n");
        assert_eq!(c.expect("valid").cpu.topology.vcpus(), 8);
    }

    #[test]
    fn isolation_keys_read_into_the_model() {
        let c = check(
            "[cpu]\ncores = 2\npin = [2, 3]\nisolate = true\nemulator_pin = [0]\ngovernor = \"performance\"\n",
        )
        .expect("valid")
        .cpu;
        assert!(c.isolate);
        assert_eq!(c.emulator_pin, [0]);
        assert_eq!(c.governor.as_deref(), Some("performance"));
        let off = check("[cpu]\nisolate = false\n").expect("valid").cpu;
        assert!(!off.isolate && off.emulator_pin.is_empty() && off.governor.is_none());
    }

    #[test]
    fn hyperv_off_under_tcg_is_allowed() {
        assert!(check("[cpu]\nhyperv = false\n[qemu]\naccel = \"tcg\"\n").is_ok());
    }

    #[test]
    fn clearing_the_hypervisor_bit_with_hyperv_is_rejected() {
        for flag in ["-hypervisor", "hypervisor=off", "hypervisor=false"] {
            let text = format!("[cpu]\nhyperv = true\nfeatures = [\"+topoext\", \"{flag}\"]\n");
            assert_eq!(errors(&text), [K::HypervisorBitCleared(flag.into())]);
        }
    }

    #[test]
    fn clearing_the_hypervisor_bit_without_hyperv_is_allowed() {
        let c = check("[cpu]\nfeatures = [\"-hypervisor\"]\n").expect("valid");
        assert_eq!(c.cpu.features, ["-hypervisor"]);
        assert!(check("[cpu]\nhyperv = true\nfeatures = [\"hypervisor=on\"]\n").is_ok());
    }
}
