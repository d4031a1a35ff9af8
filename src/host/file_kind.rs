//! Whether a file the config names may be handed to QEMU, by its type.
//! open(2) of a FIFO blocks until the other end opens (fifo(7)), a socket
//! can't be opened at all (ENXIO), and reading a character device such as
//! `/dev/zero` never ends: a disk or ISO must be a regular file or a block
//! device, a VBIOS or firmware file (read whole, or copied) a regular file.

use std::fs::{File, FileType};
use std::io;
use std::os::unix::fs::FileTypeExt;

/// What the file is for, which decides the types it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// A `[[disk]]` (image or ISO): a regular file or a block device.
    Image,
    /// A VBIOS or firmware file: a regular file.
    Regular,
}

impl Wanted {
    fn allows(self, ft: FileType) -> bool {
        ft.is_file() || (self == Wanted::Image && ft.is_block_device())
    }

    /// The types allowed, as a phrase: `a regular file`.
    pub(crate) fn what(self) -> &'static str {
        match self {
            Wanted::Image => "a regular file or a block device",
            Wanted::Regular => "a regular file",
        }
    }
}

/// Why a file of type `ft` can't serve as `wanted`, or `None` if it can.
pub(crate) fn refusal(ft: FileType, wanted: Wanted) -> Option<String> {
    if wanted.allows(ft) {
        return None;
    }
    Some(format!("is {}, not {}", name(ft), wanted.what()))
}

/// `refusal` of an open file, as an io error (InvalidInput).
pub(crate) fn check_opened(file: &File, wanted: Wanted) -> io::Result<()> {
    match refusal(file.metadata()?.file_type(), wanted) {
        None => Ok(()),
        Some(why) => Err(io::Error::new(io::ErrorKind::InvalidInput, why)),
    }
}

fn name(ft: FileType) -> &'static str {
    if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ft(path: &str) -> FileType {
        std::fs::metadata(path).unwrap().file_type()
    }

    #[test]
    fn an_image_may_be_a_file_but_not_a_fifo_a_char_device_or_a_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let file = tmp.path().join("disk.img");
        std::fs::write(&file, b"").unwrap();

        assert_eq!(refusal(ft(file.to_str().unwrap()), Wanted::Image), None);
        assert_eq!(
            refusal(ft(fifo.to_str().unwrap()), Wanted::Image).as_deref(),
            Some("is a FIFO (named pipe), not a regular file or a block device")
        );
        assert_eq!(
            refusal(ft("/dev/null"), Wanted::Image).as_deref(),
            Some("is a character device, not a regular file or a block device")
        );
        assert_eq!(
            refusal(ft(tmp.path().to_str().unwrap()), Wanted::Regular).as_deref(),
            Some("is a directory, not a regular file")
        );
    }

    #[test]
    fn an_opened_char_device_is_refused_as_invalid_input() {
        let null = File::open("/dev/null").unwrap();
        let err = check_opened(&null, Wanted::Regular).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
