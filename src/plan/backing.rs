//! The backing file a qcow2 image names in its header. QEMU opens a
//! backing chain itself, as the unprivileged identity it runs as, so it can
//! only read what that identity may; an image without one is opened with
//! `backing: null`, so a header rewritten later (by the guest's owner, the
//! image's owner) can't add one.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::Serialize;

use super::finding::Finding;
use super::identity::QemuIdentity;
use crate::config::{DiskFormat, VmConfig};
use crate::host::HostRoot;

/// What a disk's header says about a backing file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backing {
    /// Not a qcow2 (raw images have no header), or not readable now.
    Unknown,
    /// A qcow2 without a backing file: QEMU gets `backing: null`.
    Null,
    /// A qcow2 naming this backing file.
    File(String),
}

/// qcow2's header (docs/interop/qcow2.txt): magic `QFI\xfb` at 0, then
/// `backing_file_offset` (u64, big-endian) at 8 and `backing_file_size`
/// (u32) at 16; an offset of 0 means no backing file.
pub(crate) fn read_header(bytes: &[u8]) -> Option<Option<(u64, u32)>> {
    if bytes.len() < 20 || &bytes[..4] != b"QFI\xfb" {
        return None;
    }
    let offset = u64::from_be_bytes(bytes[8..16].try_into().ok()?);
    let size = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    Some((offset != 0).then_some((offset, size)))
}

fn backing_of(path: &Path) -> Backing {
    let Ok(mut file) = File::open(path) else {
        return Backing::Unknown;
    };
    let mut header = [0u8; 20];
    if file.read_exact(&mut header).is_err() {
        return Backing::Unknown;
    }
    match read_header(&header) {
        None => Backing::Unknown,
        Some(None) => Backing::Null,
        Some(Some((offset, size))) => {
            // QEMU caps the name at 1023 bytes.
            let mut name = vec![0u8; size.min(1023) as usize];
            use std::io::{Seek, SeekFrom};
            let read = file
                .seek(SeekFrom::Start(offset))
                .and_then(|_| file.read_exact(&mut name));
            match read {
                Ok(()) => Backing::File(String::from_utf8_lossy(&name).into_owned()),
                Err(_) => Backing::File("(unreadable name)".into()),
            }
        }
    }
}

/// Each disk's backing, in `vm.disks` order; a warning for each qcow2 that
/// names a backing file, saying who must be able to read it.
pub(crate) fn plan_backing(
    vm: &VmConfig,
    identity: Option<&QemuIdentity>,
    root: &HostRoot,
    findings: &mut Vec<Finding>,
) -> Vec<Backing> {
    vm.disks
        .iter()
        .map(|disk| {
            if disk.format != DiskFormat::Qcow2 {
                return Backing::Unknown;
            }
            let backing = backing_of(&root.path(&disk.path));
            if let Backing::File(name) = &backing {
                let who = identity.map_or_else(
                    || "the user vmrun runs as".to_string(),
                    |id| format!("uid {} ({})", id.uid, id.label),
                );
                findings.push(
                    Finding::warning(
                        disk.path.display(),
                        format!("qcow2 image with backing file `{name}`: QEMU opens it itself, as {who}, so that uid must be able to read it"),
                    )
                    .fix("make the backing file readable by that uid, or flatten the image: qemu-img convert -O qcow2 IMAGE NEW"),
                );
            }
            backing
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(offset: u64, size: u32) -> Vec<u8> {
        let mut h = b"QFI\xfb\0\0\0\x03".to_vec();
        h.extend_from_slice(&offset.to_be_bytes());
        h.extend_from_slice(&size.to_be_bytes());
        h
    }

    #[test]
    fn a_qcow2_header_says_whether_it_has_a_backing_file() {
        assert_eq!(read_header(&header(0, 0)), Some(None));
        assert_eq!(read_header(&header(0x200, 11)), Some(Some((0x200, 11))));
        assert_eq!(read_header(b"not a qcow2 image at all"), None);
        assert_eq!(read_header(b"QFI"), None);
    }

    #[test]
    fn a_backing_file_is_named_from_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = header(0x40, 11);
        bytes.resize(0x40, 0);
        bytes.extend_from_slice(b"/etc/shadow");
        let image = dir.path().join("a.qcow2");
        std::fs::write(&image, &bytes).unwrap();
        assert_eq!(backing_of(&image), Backing::File("/etc/shadow".into()));
        std::fs::write(&image, header(0, 0)).unwrap();
        assert_eq!(backing_of(&image), Backing::Null);
        assert_eq!(backing_of(&dir.path().join("missing")), Backing::Unknown);
    }
}
