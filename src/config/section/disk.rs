//! `[[disk]]`: an image or block device, as a disk or a cdrom.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::checker::{parts, Checker, S};
use crate::config::error::ProblemKind as K;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskInterface {
    Virtio,
    Scsi,
    Nvme,
    Sata,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskMedia {
    Disk,
    Cdrom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

/// QEMU's `cache=` modes, as `-drive` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cache {
    None,
    Writeback,
    Writethrough,
    Directsync,
    Unsafe,
}

/// QEMU's `aio=` backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aio {
    Threads,
    Native,
    IoUring,
}

impl Aio {
    /// The name QEMU's `aio=` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Threads => "threads",
            Self::Native => "native",
            Self::IoUring => "io_uring",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireDisk {
    path: S<String>,
    interface: Option<DiskInterface>,
    media: Option<DiskMedia>,
    format: Option<DiskFormat>,
    readonly: Option<bool>,
    cache: Option<Cache>,
    aio: Option<Aio>,
    #[serde(default)]
    discard: bool,
    iothread: S<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disk {
    pub path: PathBuf,
    pub interface: DiskInterface,
    pub media: DiskMedia,
    pub format: DiskFormat,
    pub readonly: bool,
    /// `None`: QEMU's default, writeback.
    pub cache: Option<Cache>,
    /// `None`: QEMU's default for the cache mode.
    pub aio: Option<Aio>,
    pub discard: bool,
    /// Its own QEMU I/O thread (virtio-blk; for SCSI, the controller's),
    /// pinned with QEMU's other threads.
    pub iothread: bool,
}

pub(crate) fn check(list: Vec<Spanned<WireDisk>>, v: &mut Checker<'_>) -> Vec<Disk> {
    let mut out = Vec::new();
    for (i, d) in list.into_iter().enumerate() {
        let (span, d) = parts(d);
        let media = d.media.unwrap_or(DiskMedia::Disk);
        let Some(raw) = d.path.map(Spanned::into_inner) else {
            v.err(format!("disk[{i}]"), span, K::Missing("path"));
            continue;
        };
        // Whether the image exists is host state (a disk may be created
        // later, a block device plugged in): the plan checks it.
        let path = v.resolve(&raw);
        let interface = d.interface.unwrap_or(match media {
            // virtio-blk cannot hold removable media; AHCI is what every
            // installer can boot from.
            DiskMedia::Cdrom => DiskInterface::Sata,
            DiskMedia::Disk => DiskInterface::Virtio,
        });
        if media == DiskMedia::Cdrom
            && matches!(interface, DiskInterface::Virtio | DiskInterface::Nvme)
        {
            v.err(format!("disk[{i}].interface"), span, K::CdromInterface);
        }
        let format = d
            .format
            .unwrap_or(if path.extension().is_some_and(|e| e == "qcow2") {
                DiskFormat::Qcow2
            } else {
                DiskFormat::Raw
            });
        let iothread = d.iothread.is_some_and(|t| {
            let (s, on) = parts(t);
            // QEMU's iothread property exists on virtio-blk and virtio-scsi
            // only; a cdrom on virtio goes on SATA.
            let virtio = matches!(interface, DiskInterface::Virtio | DiskInterface::Scsi);
            if on && (!virtio || (media == DiskMedia::Cdrom && interface == DiskInterface::Virtio))
            {
                v.err(format!("disk[{i}].iothread"), s, K::IothreadInterface);
            }
            on
        });
        out.push(Disk {
            iothread,
            path,
            interface,
            media,
            format,
            readonly: d.readonly.unwrap_or(media == DiskMedia::Cdrom),
            cache: d.cache,
            aio: d.aio,
            discard: d.discard,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::vm::testing::{check, check_with, errors};

    #[test]
    fn a_missing_disk_is_left_to_the_plan() {
        let c = check_with(
            "memory = \"1G\"\n[[disk]]\npath = \"missing.qcow2\"\n",
            &|_: &Path| false,
        );
        assert!(c.is_ok(), "{c:?}");
    }

    #[test]
    fn disk_defaults_follow_media_and_extension() {
        let c =
            check("[[disk]]\npath = \"d.qcow2\"\n[[disk]]\npath = \"i.iso\"\nmedia = \"cdrom\"\n");
        let disks = c.expect("valid").disks;
        assert_eq!(disks[0].path, PathBuf::from("/cfg/vms/d.qcow2"));
        assert_eq!(
            (disks[0].format, disks[0].readonly, disks[0].interface),
            (DiskFormat::Qcow2, false, DiskInterface::Virtio)
        );
        assert_eq!(
            (disks[1].format, disks[1].readonly, disks[1].interface),
            (DiskFormat::Raw, true, DiskInterface::Sata)
        );
    }

    #[test]
    fn an_iothread_is_for_virtio_and_scsi_disks_only() {
        let c = check("[[disk]]\npath = \"d.img\"\niothread = true\n");
        assert!(c.expect("valid").disks[0].iothread);
        for iface in ["sata", "nvme"] {
            let text =
                format!("[[disk]]\npath = \"d.img\"\ninterface = \"{iface}\"\niothread = true\n");
            assert_eq!(errors(&text), [K::IothreadInterface], "{iface}");
        }
    }

    #[test]
    fn cache_and_aio_are_typed() {
        let c = check("[[disk]]\npath = \"d.img\"\ncache = \"directsync\"\naio = \"io_uring\"\n");
        let d = &c.expect("valid").disks[0];
        assert_eq!(
            (d.cache, d.aio),
            (Some(Cache::Directsync), Some(Aio::IoUring))
        );
        assert_eq!(Aio::IoUring.name(), "io_uring");
    }

    #[test]
    fn virtio_cdrom_is_rejected() {
        let e = errors("[[disk]]\npath = \"i.iso\"\nmedia = \"cdrom\"\ninterface = \"virtio\"\n");
        assert_eq!(e, [K::CdromInterface]);
    }
}
