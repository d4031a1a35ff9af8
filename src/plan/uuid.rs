//! The VM's UUID (`-uuid`: the SMBIOS system UUID, which Windows
//! activation and licensed software key on, and which QEMU otherwise leaves
//! all zeros): the same on every run of a VM on one host, different for
//! the same name on another host.
//!
//! The derivation is fixed, so that a guest keeps its UUID across vmrun
//! versions: an RFC 4122 (RFC 9562) version-5 UUID, SHA-1 and name-based,
//! whose namespace is the host's `/etc/machine-id` read as a UUID (its 32
//! hex digits in order) and whose name is the VM's name in UTF-8. A host
//! without a readable machine-id uses the nil namespace (all zeros).

use super::finding::Finding;
use crate::host::HostRoot;

/// The UUID of VM `name` on the host at `root`, as QEMU's `-uuid` takes it.
pub(crate) fn vm_uuid(root: &HostRoot, name: &str, findings: &mut Vec<Finding>) -> String {
    let namespace = machine_id(root).unwrap_or_else(|| {
        findings.push(
            Finding::info(
                "uuid",
                "no /etc/machine-id: the VM's UUID derives from its name alone",
            )
            .fix("systemd-machine-id-setup creates one"),
        );
        [0; 16]
    });
    format_uuid(&uuid_v5(namespace, name.as_bytes()))
}

/// `/etc/machine-id`: 32 lowercase hex digits and a newline (machine-id(5)).
fn machine_id(root: &HostRoot) -> Option<[u8; 16]> {
    let text = std::fs::read_to_string(root.path("/etc/machine-id")).ok()?;
    let hex = text.trim();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(id)
}

/// RFC 9562 section 5.5: SHA-1 of namespace then name, first 16 bytes,
/// version 5 in the high nibble of byte 6, variant `10` in byte 8.
fn uuid_v5(namespace: [u8; 16], name: &[u8]) -> [u8; 16] {
    let mut data = namespace.to_vec();
    data.extend_from_slice(name);
    let hash = sha1(&data);
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&hash[..16]);
    uuid[6] = (uuid[6] & 0x0f) | 0x50;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

fn format_uuid(u: &[u8; 16]) -> String {
    let hex: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        hex[0..4].concat(),
        hex[4..6].concat(),
        hex[6..8].concat(),
        hex[8..10].concat(),
        hex[10..16].concat()
    )
}

/// SHA-1 (FIPS 180-4), for the few bytes of a name-based UUID: not for
/// anything that needs collision resistance.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xefcd_ab89,
        0x98ba_dcfe,
        0x1032_5476,
        0xc3d2_e1f0,
    ];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5a82_7999),
                20..=39 => (b ^ c ^ d, 0x6ed9_eba1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8f1b_bcdc),
                _ => (b ^ c ^ d, 0xca62_c1d6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (hi, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hi = hi.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, v) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&v.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha1_matches_the_fips_180_examples() {
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex(&sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
    }

    #[test]
    fn uuid_v5_matches_the_rfc_namespace_example() {
        // Python's uuid.uuid5(uuid.NAMESPACE_DNS, "python.org").
        let dns = [
            0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4,
            0x30, 0xc8,
        ];
        assert_eq!(
            format_uuid(&uuid_v5(dns, b"python.org")),
            "886313e1-3b8a-5372-9b90-0c9aee199e5d"
        );
    }

    #[test]
    fn the_uuid_depends_on_the_machine_id_and_the_name_only() {
        let host = |id: &str| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("etc")).unwrap();
            std::fs::write(dir.path().join("etc/machine-id"), id).unwrap();
            dir
        };
        let a = host("3d1219c7c4c5404aaa1f6d2a48adfda4\n");
        let b = host("0123456789abcdef0123456789abcdef\n");
        let uuid = |dir: &tempfile::TempDir, name| {
            let mut findings = vec![];
            let u = vm_uuid(&HostRoot::new(dir.path()), name, &mut findings);
            assert!(findings.is_empty(), "{findings:?}");
            u
        };
        assert_eq!(uuid(&a, "win11"), uuid(&a, "win11"));
        assert_ne!(uuid(&a, "win11"), uuid(&a, "win10"));
        assert_ne!(uuid(&a, "win11"), uuid(&b, "win11"));
        // The documented derivation, pinned (Python: uuid.uuid5(UUID(machine-id), name)).
        assert_eq!(uuid(&a, "win11"), "894fbdda-b120-575e-843a-b4bd8d65c3eb");
    }

    #[test]
    fn no_machine_id_is_the_nil_namespace_and_a_finding() {
        let dir = tempfile::tempdir().unwrap();
        let mut findings = vec![];
        let u = vm_uuid(&HostRoot::new(dir.path()), "win11", &mut findings);
        assert_eq!(u, format_uuid(&uuid_v5([0; 16], b"win11")));
        assert_eq!(findings.len(), 1);
    }
}
