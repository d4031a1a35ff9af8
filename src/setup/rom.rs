//! PCI option ROM images (PCI Firmware Specification 3.0, ch. 5): the
//! `55 AA` signature at offset 0, a 16-bit pointer at 0x18 to the `PCIR`
//! data structure, which names the vendor and device the image is for.
//! Pure: reading the ROM from sysfs is `prepare::rom`.

/// Offset of the pointer to the PCI data structure in the ROM header.
const PCIR_POINTER: usize = 0x18;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RomError {
    #[error("the ROM is empty: the kernel returned no bytes (is the card's ROM shadowed or disabled by its driver?)")]
    Empty,
    #[error("no 55 AA signature at the start of the ROM (it starts with {found}): not an option ROM image")]
    NoSignature { found: String },
    #[error("the ROM has a {offset}-byte header before its 55 AA signature (some NVIDIA dumps do); rerun with --patch to strip it")]
    Header { offset: usize },
    #[error("the ROM's PCIR structure is missing or cut short (pointer 0x{pointer:x} in a {len}-byte image)")]
    NoPcir { pointer: usize, len: usize },
    #[error("the ROM is for {found_vendor:04x}:{found_device:04x}, not this device {vendor:04x}:{device:04x}")]
    WrongDevice {
        vendor: u16,
        device: u16,
        found_vendor: u16,
        found_device: u16,
    },
}

/// What a valid image says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RomImage {
    pub vendor: u16,
    pub device: u16,
    /// Bytes stripped before the signature (`--patch`), 0 when none.
    pub stripped: usize,
    /// The image length the PCIR declares (512-byte units), in bytes.
    pub declared_len: usize,
    /// Code type: 0 x86 legacy, 3 EFI.
    pub code_type: u8,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// Parses the image starting at `bytes[0]`.
fn parse_at(bytes: &[u8]) -> Result<RomImage, RomError> {
    if bytes.get(..2) != Some(&[0x55, 0xAA][..]) {
        let found = bytes
            .iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(RomError::NoSignature { found });
    }
    let no_pcir = |pointer| RomError::NoPcir {
        pointer,
        len: bytes.len(),
    };
    let pointer = usize::from(u16_at(bytes, PCIR_POINTER).ok_or(no_pcir(PCIR_POINTER))?);
    let pcir = bytes
        .get(pointer..pointer + 0x18)
        .filter(|p| p.starts_with(b"PCIR"))
        .ok_or(no_pcir(pointer))?;
    Ok(RomImage {
        vendor: u16_at(pcir, 4).ok_or(no_pcir(pointer))?,
        device: u16_at(pcir, 6).ok_or(no_pcir(pointer))?,
        stripped: 0,
        declared_len: usize::from(u16_at(pcir, 0x10).ok_or(no_pcir(pointer))?) * 512,
        code_type: pcir[0x14],
    })
}

/// Validates a ROM read from the device `vendor:device`. With `patch`, a
/// header before the first `55 AA` that starts a valid image for this
/// device is stripped: some NVIDIA dumps (e.g. from flashing tools) carry
/// a vendor header before the image, which a PCI option ROM must not have
/// (its first bytes are the `55 AA` signature).
/// Returns the image and the bytes to write.
pub(crate) fn validate(
    bytes: &[u8],
    vendor: u16,
    device: u16,
    patch: bool,
) -> Result<(RomImage, &[u8]), RomError> {
    if bytes.is_empty() || bytes.iter().all(|&b| b == 0xff) {
        return Err(RomError::Empty);
    }
    let matches = |image: &RomImage| image.vendor == vendor && image.device == device;
    let first = parse_at(bytes);
    if let Ok(image) = &first {
        if matches(image) {
            return Ok((image.clone(), bytes));
        }
    }
    // A header: the first offset where a valid image for this device starts.
    let later = (1..bytes.len().saturating_sub(1))
        .filter(|&i| bytes[i] == 0x55 && bytes[i + 1] == 0xAA)
        .find_map(|i| {
            parse_at(&bytes[i..])
                .ok()
                .filter(matches)
                .map(|img| (i, img))
        });
    match (later, first) {
        (Some((offset, image)), _) if patch => Ok((
            RomImage {
                stripped: offset,
                ..image
            },
            &bytes[offset..],
        )),
        (Some((offset, _)), _) => Err(RomError::Header { offset }),
        (None, Ok(image)) => Err(RomError::WrongDevice {
            vendor,
            device,
            found_vendor: image.vendor,
            found_device: image.device,
        }),
        (None, Err(e)) => Err(e),
    }
}

/// A minimal valid image for tests: header, PCIR at 0x40, `len` bytes.
#[cfg(test)]
pub(crate) fn sample_image(vendor: u16, device: u16, len: usize) -> Vec<u8> {
    let mut rom = vec![0u8; len.max(0x60)];
    rom[0] = 0x55;
    rom[1] = 0xAA;
    let blocks = (rom.len() / 512) as u16;
    rom[2] = blocks as u8;
    rom[PCIR_POINTER..PCIR_POINTER + 2].copy_from_slice(&0x40u16.to_le_bytes());
    rom[0x40..0x44].copy_from_slice(b"PCIR");
    rom[0x44..0x46].copy_from_slice(&vendor.to_le_bytes());
    rom[0x46..0x48].copy_from_slice(&device.to_le_bytes());
    rom[0x50..0x52].copy_from_slice(&blocks.to_le_bytes());
    rom[0x55] = 0x80;
    rom
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_image_passes_unchanged() {
        let rom = sample_image(0x1234, 0x1111, 1024);
        let (image, out) = validate(&rom, 0x1234, 0x1111, false).unwrap();
        assert_eq!(
            (image.vendor, image.device, image.stripped),
            (0x1234, 0x1111, 0)
        );
        assert_eq!(image.declared_len, 1024);
        assert_eq!(out, &rom[..]);
    }

    #[test]
    fn a_header_is_refused_without_patch_and_stripped_with_it() {
        let mut rom = b"NVGI....VIDEO header".to_vec();
        let header = rom.len();
        rom.extend(sample_image(0x10de, 0x25a1, 1024));
        let err = validate(&rom, 0x10de, 0x25a1, false).unwrap_err();
        assert_eq!(err, RomError::Header { offset: header });
        let (image, out) = validate(&rom, 0x10de, 0x25a1, true).unwrap();
        assert_eq!(image.stripped, header);
        assert_eq!(&out[..2], &[0x55, 0xAA]);
        assert_eq!(out.len(), 1024);
    }

    #[test]
    fn a_rom_for_another_device_is_refused() {
        let rom = sample_image(0x1002, 0x73bf, 512);
        assert!(matches!(
            validate(&rom, 0x10de, 0x25a1, true),
            Err(RomError::WrongDevice {
                found_vendor: 0x1002,
                ..
            })
        ));
    }

    #[test]
    fn garbage_and_empty_reads_are_refused() {
        assert_eq!(validate(&[], 1, 2, false), Err(RomError::Empty));
        assert_eq!(validate(&[0xff; 64], 1, 2, false), Err(RomError::Empty));
        assert!(matches!(
            validate(&[0x12, 0x34, 0, 0], 1, 2, true),
            Err(RomError::NoSignature { .. })
        ));
    }

    #[test]
    fn a_pcir_pointer_past_the_end_is_refused() {
        let mut rom = sample_image(1, 2, 512);
        rom[PCIR_POINTER] = 0xf0;
        rom[PCIR_POINTER + 1] = 0x01;
        assert!(matches!(
            validate(&rom, 1, 2, false),
            Err(RomError::NoPcir { .. })
        ));
    }
}
