//! `[[hostdev]]`: a PCI device given to the VM, by address or by ids.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::checker::{parts, Checker, S};
use crate::config::error::ProblemKind as K;
use crate::config::types::{PciAddress, PciIds};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireHostdev {
    address: S<PciAddress>,
    ids: S<PciIds>,
    index: S<u32>,
    x_vga: S<bool>,
    romfile: S<String>,
    rombar: Option<bool>,
    multifunction: Option<bool>,
    #[serde(default)]
    rescan_fallback: bool,
}

/// How a `[[hostdev]]` names its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostdevSelector {
    Address(PciAddress),
    /// The `index`th device (in address order) with these ids.
    Ids {
        ids: PciIds,
        index: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hostdev {
    pub selector: HostdevSelector,
    pub x_vga: bool,
    pub romfile: Option<PathBuf>,
    pub rombar: Option<bool>,
    /// `None`: on for function 0 when the config also passes its siblings.
    pub multifunction: Option<bool>,
    /// When the device won't go back to its driver after the VM: remove it
    /// from the bus and rescan, which gives the kernel a fresh device to
    /// probe (the last resort for cards whose driver refuses a rebind).
    pub rescan_fallback: bool,
}

impl Hostdev {
    /// The device at `address`, every option at its default.
    pub fn at(address: PciAddress) -> Self {
        Self {
            selector: HostdevSelector::Address(address),
            x_vga: false,
            romfile: None,
            rombar: None,
            multifunction: None,
            rescan_fallback: false,
        }
    }
}

pub(crate) fn check(list: Vec<Spanned<WireHostdev>>, v: &mut Checker<'_>) -> Vec<Hostdev> {
    let mut out: Vec<Hostdev> = Vec::new();
    let mut x_vga_seen = false;
    for (i, h) in list.into_iter().enumerate() {
        let key = |k: &str| format!("hostdev[{i}].{k}");
        let (span, h) = parts(h);
        if let (Some(index), None) = (&h.index, &h.ids) {
            v.err(key("index"), index.span(), K::IndexWithoutIds);
        }
        let selector = match (h.address.map(parts), h.ids.map(parts)) {
            (Some((s, address)), None) => Some((s, HostdevSelector::Address(address))),
            (None, Some((s, ids))) => {
                let index = h.index.map_or(0, |i| *i.get_ref());
                Some((s, HostdevSelector::Ids { ids, index }))
            }
            (Some(_), Some((s, _))) => {
                v.err(key("ids"), s, K::BothSelectors);
                None
            }
            (None, None) => {
                v.err(format!("hostdev[{i}]"), span, K::NoSelector);
                None
            }
        };
        let x_vga = h.x_vga.map(|x| {
            if *x.get_ref() && std::mem::replace(&mut x_vga_seen, true) {
                v.err(key("x_vga"), x.span(), K::MultipleXVga);
            }
            *x.get_ref()
        });
        let romfile = h.romfile.map(|r| romfile(&key("romfile"), r, v));
        let Some((sel_span, selector)) = selector else {
            continue;
        };
        if out.iter().any(|o| o.selector == selector) {
            let (k, what) = match selector {
                HostdevSelector::Address(a) => ("address", a.to_string()),
                HostdevSelector::Ids { ids, index } => ("ids", format!("{ids} index {index}")),
            };
            v.err(key(k), sel_span, K::DuplicateHostdev(what));
        }
        out.push(Hostdev {
            selector,
            x_vga: x_vga.unwrap_or(false),
            romfile,
            rombar: h.rombar,
            multifunction: h.multifunction,
            rescan_fallback: h.rescan_fallback,
        });
    }
    out
}

/// A bare romfile name is looked up next to the config and in the
/// `firmware/` folders beside and above it.
fn romfile(key: &str, p: Spanned<String>, v: &mut Checker<'_>) -> PathBuf {
    if p.get_ref().contains('/') {
        return v.existing_file(key, p);
    }
    let (span, name) = parts(p);
    let dir = v.dir();
    let mut searched = vec![dir.join(&name)];
    if let Some(parent) = dir.parent() {
        searched.push(parent.join("firmware").join(&name));
    }
    searched.push(dir.join("firmware").join(&name));
    if let Some(found) = searched.iter().find(|p| v.exists(p)) {
        return found.clone();
    }
    let first = searched[0].clone();
    v.err(key, span, K::FileNotFound { searched });
    first
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::vm::testing::{assert_problems, check, check_with, errors};
    use crate::config::Display;

    #[test]
    fn each_broken_rule_is_reported() {
        assert_problems(&[
            (
                "[[hostdev]]\naddress = \"01:00.0\"\nx_vga = true\n\
                 [[hostdev]]\naddress = \"02:00.0\"\nx_vga = true\n",
                &[K::MultipleXVga],
            ),
            (
                "[[hostdev]]\naddress = \"01:00.0\"\n[[hostdev]]\naddress = \"0000:01:00.0\"\n",
                &[K::DuplicateHostdev("0000:01:00.0".into())],
            ),
            ("[[hostdev]]\nx_vga = true\n", &[K::NoSelector]),
            (
                "[[hostdev]]\naddress = \"01:00.0\"\nids = \"10de:25a1\"\n",
                &[K::BothSelectors],
            ),
            (
                "[[hostdev]]\naddress = \"01:00.0\"\nindex = 1\n",
                &[K::IndexWithoutIds],
            ),
        ]);
    }

    #[test]
    fn duplicate_hostdev_ids_and_index_is_rejected() {
        let e = errors(
            "[[hostdev]]\nids = \"10de:25a1\"\n[[hostdev]]\nids = \"10de:25a1\"\nindex = 0\n",
        );
        assert!(matches!(e[..], [K::DuplicateHostdev(_)]));
    }

    #[test]
    fn hostdev_makes_display_default_to_none() {
        let c = check("[[hostdev]]\nids = \"10de:25a1\"\nindex = 1\n").expect("valid");
        assert_eq!(c.display, Display::None);
        let ids = "10de:25a1".parse().expect("ids");
        assert_eq!(
            c.hostdevs[0].selector,
            HostdevSelector::Ids { ids, index: 1 }
        );
    }

    #[test]
    fn bare_romfile_is_found_in_sibling_firmware_dir() {
        let text = "memory = \"1G\"\n[[hostdev]]\naddress = \"01:00.0\"\nromfile = \"gpu.rom\"\n";
        let c = check_with(text, &|p: &Path| p == Path::new("/cfg/firmware/gpu.rom"));
        let rom = c.expect("valid").hostdevs[0].romfile.clone();
        assert_eq!(rom, Some(PathBuf::from("/cfg/firmware/gpu.rom")));
    }

    #[test]
    fn missing_bare_romfile_lists_every_place_searched() {
        let text = "memory = \"1G\"\n[[hostdev]]\naddress = \"01:00.0\"\nromfile = \"gpu.rom\"\n";
        let e = check_with(text, &|_| false).unwrap_err();
        let K::FileNotFound { searched } = &e[0] else {
            panic!("expected FileNotFound, got {e:?}");
        };
        assert_eq!(
            searched,
            &[
                PathBuf::from("/cfg/vms/gpu.rom"),
                PathBuf::from("/cfg/firmware/gpu.rom"),
                PathBuf::from("/cfg/vms/firmware/gpu.rom"),
            ]
        );
    }
}
