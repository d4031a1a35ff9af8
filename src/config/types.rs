//! Value newtypes of the config: parsed with `FromStr`, never panicking, one
//! error variant per way to be wrong (after crosvm's `PciAddress`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a PCI address did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PciAddressError {
    #[error("expected DDDD:BB:SS.F or BB:SS.F (e.g. 0000:01:00.0)")]
    Shape,
    #[error("domain `{0}` is not 1-4 hex digits")]
    Domain(String),
    #[error("bus `{0}` is not 1-2 hex digits")]
    Bus(String),
    #[error("slot `{0}` is not a hex number from 00 to 1f")]
    Slot(String),
    #[error("function `{0}` is not a digit from 0 to 7")]
    Function(String),
}

/// A PCI function address, `domain:bus:slot.function`, as sysfs names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    pub domain: u16,
    pub bus: u8,
    pub slot: u8,
    pub function: u8,
}

impl PciAddress {
    /// The same device's function `f` (a GPU's audio function is `.1`).
    pub fn with_function(self, function: u8) -> Self {
        Self { function, ..self }
    }

    /// Domain, bus and slot: the physical device the functions belong to.
    pub fn slot_key(self) -> (u16, u8, u8) {
        (self.domain, self.bus, self.slot)
    }
}

fn hex_field<E>(s: &str, max_len: usize, err: impl Fn(String) -> E) -> Result<u32, E> {
    if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(s.to_string()));
    }
    u32::from_str_radix(s, 16).map_err(|_| err(s.to_string()))
}

impl FromStr for PciAddress {
    type Err = PciAddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (rest, function) = s.rsplit_once('.').ok_or(PciAddressError::Shape)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, slot) = match parts.as_slice() {
            [d, b, s] => (*d, *b, *s),
            [b, s] => ("0000", *b, *s),
            _ => return Err(PciAddressError::Shape),
        };
        let domain = hex_field(domain, 4, PciAddressError::Domain)? as u16;
        let bus = hex_field(bus, 2, PciAddressError::Bus)? as u8;
        let slot_n = hex_field(slot, 2, PciAddressError::Slot)?;
        if slot_n > 0x1f {
            return Err(PciAddressError::Slot(slot.to_string()));
        }
        let function_n = match function.as_bytes() {
            [d @ b'0'..=b'7'] => d - b'0',
            _ => return Err(PciAddressError::Function(function.to_string())),
        };
        Ok(Self {
            domain,
            bus,
            slot: slot_n as u8,
            function: function_n,
        })
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{}",
            self.domain, self.bus, self.slot, self.function
        )
    }
}

/// Why a `vendor:device` pair did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PciIdsError {
    #[error("expected VVVV:DDDD in hex (e.g. 10de:25a1)")]
    Shape,
}

/// A `vendor:device` id pair, as `lspci -nn` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PciIds {
    pub vendor: u16,
    pub device: u16,
}

impl FromStr for PciIds {
    type Err = PciIdsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (v, d) = s.split_once(':').ok_or(PciIdsError::Shape)?;
        let field = |x: &str| hex_field(x, 4, |_| PciIdsError::Shape).map(|n| n as u16);
        if v.len() != 4 || d.len() != 4 {
            return Err(PciIdsError::Shape);
        }
        Ok(Self {
            vendor: field(v)?,
            device: field(d)?,
        })
    }
}

impl fmt::Display for PciIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vendor, self.device)
    }
}

/// A whole number and the unit written after it (`"16G"`, `"60s"`): `None`
/// when `s` does not start with a digit; the number is `None` when it does
/// not fit in `u64`.
fn number_and_unit(s: &str) -> Option<(Option<u64>, &str)> {
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(digits_end);
    (!digits.is_empty()).then(|| (digits.parse().ok(), unit))
}

/// Why a byte size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    #[error("expected a whole number with a K, M, G or T suffix (e.g. \"16G\")")]
    Shape,
    #[error("unknown unit `{0}`: use K, M, G or T (binary units: 1G = 1024M)")]
    Unit(String),
    #[error("{0} is too large")]
    Overflow(String),
    #[error("a size of zero is not allowed")]
    Zero,
}

/// A size in bytes, written with binary K/M/G/T suffixes (`"16G"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

impl ByteSize {
    pub const KIB: u64 = 1 << 10;
    pub const MIB: u64 = 1 << 20;
    pub const GIB: u64 = 1 << 30;
    pub const TIB: u64 = 1 << 40;

    pub fn from_bytes(bytes: u64) -> Self {
        Self(bytes)
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Whole mebibytes, rounded down: what `-m` and `size=` are written in.
    pub fn mib(self) -> u64 {
        self.0 / Self::MIB
    }
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (n, unit) = number_and_unit(s).ok_or(ByteSizeError::Shape)?;
        let multiplier = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => Self::KIB,
            "M" | "MB" | "MIB" => Self::MIB,
            "G" | "GB" | "GIB" => Self::GIB,
            "T" | "TB" | "TIB" => Self::TIB,
            _ => return Err(ByteSizeError::Unit(unit.trim().to_string())),
        };
        let bytes = n
            .and_then(|n| n.checked_mul(multiplier))
            .ok_or_else(|| ByteSizeError::Overflow(s.to_string()))?;
        if bytes == 0 {
            return Err(ByteSizeError::Zero);
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for ByteSize {
    /// The largest unit that divides the size exactly: `16G`, `1536M`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, size) in [
            ("T", Self::TIB),
            ("G", Self::GIB),
            ("M", Self::MIB),
            ("K", Self::KIB),
        ] {
            if self.0 >= size && self.0 % size == 0 {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("expected a whole number with ms, s, m or h (e.g. \"60s\", \"2m\")")]
    Shape,
    #[error("unknown unit `{0}`: use ms, s, m or h")]
    Unit(String),
    #[error("{0} is too long")]
    Overflow(String),
}

/// A span of time written as `"500ms"`, `"60s"`, `"2m"` or `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (n, unit) = number_and_unit(s).ok_or(DurationError::Shape)?;
        let overflow = || DurationError::Overflow(s.to_string());
        let n = n.ok_or_else(overflow)?;
        let millis_per = match unit.trim() {
            "ms" => 1,
            "s" | "" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            other => return Err(DurationError::Unit(other.to_string())),
        };
        let millis = n.checked_mul(millis_per).ok_or_else(overflow)?;
        Ok(Self(std::time::Duration::from_millis(millis)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 != 0 {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}

/// Why a VM name is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmNameError {
    #[error("a VM name must not be empty")]
    Empty,
    #[error("a VM name is at most 64 characters")]
    TooLong,
    #[error("`{0}` is not allowed in a VM name: use letters, digits, `-` and `_`, starting with a letter or digit")]
    Char(char),
}

/// A VM's name. It becomes part of paths (`/run/vmrun/NAME`) and of QEMU's
/// `-name guest=`, so it is held to Firecracker's instance-id rule: ASCII
/// letters, digits, `-` and `_`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmName(String);

impl VmName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for VmName {
    type Err = VmNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let first = s.chars().next().ok_or(VmNameError::Empty)?;
        if s.len() > 64 {
            return Err(VmNameError::TooLong);
        }
        if !first.is_ascii_alphanumeric() {
            return Err(VmNameError::Char(first));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(VmNameError::Char(bad));
        }
        Ok(Self(s.to_string()))
    }
}

impl fmt::Display for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serde through `FromStr`/`Display`, so a wire struct can hold the newtype
/// directly and the parse error lands on the value's span.
macro_rules! serde_via_str {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
serde_via_str!(PciAddress, PciIds, ByteSize, Duration, VmName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_address_full_form_parses() {
        let a: PciAddress = "0000:01:00.1".parse().unwrap();
        assert_eq!((a.domain, a.bus, a.slot, a.function), (0, 1, 0, 1));
    }

    #[test]
    fn pci_address_short_form_gets_domain_zero() {
        let a: PciAddress = "0a:1f.7".parse().unwrap();
        assert_eq!(a.to_string(), "0000:0a:1f.7");
    }

    #[test]
    fn pci_address_errors_name_the_part() {
        use PciAddressError as E;
        for (text, want) in [
            ("01:00", E::Shape),
            ("0000:01:00:00.0", E::Shape),
            ("0000:zz:00.0", E::Bus("zz".into())),
            ("g000:01:00.0", E::Domain("g000".into())),
            ("01:20.0", E::Slot("20".into())),
            ("01:00.8", E::Function("8".into())),
            ("01:00.", E::Function(String::new())),
            ("01:+0.0", E::Slot("+0".into())),
        ] {
            assert_eq!(text.parse::<PciAddress>(), Err(want), "{text}");
        }
    }

    #[test]
    fn pci_ids_parse_and_reject() {
        let ids: PciIds = "10de:25A1".parse().unwrap();
        assert_eq!(ids.to_string(), "10de:25a1");
        assert_eq!("10de".parse::<PciIds>(), Err(PciIdsError::Shape));
        assert_eq!("10de:25a".parse::<PciIds>(), Err(PciIdsError::Shape));
        assert_eq!("10de:+5a1".parse::<PciIds>(), Err(PciIdsError::Shape));
    }

    #[test]
    fn byte_size_units_are_binary() {
        assert_eq!("16G".parse::<ByteSize>().unwrap().bytes(), 16 << 30);
        assert_eq!("512M".parse::<ByteSize>().unwrap().mib(), 512);
        assert_eq!("2k".parse::<ByteSize>().unwrap().bytes(), 2048);
        assert_eq!("1GiB".parse::<ByteSize>().unwrap().bytes(), 1 << 30);
        assert_eq!("1536M".parse::<ByteSize>().unwrap().to_string(), "1536M");
    }

    #[test]
    fn byte_size_errors() {
        use ByteSizeError as E;
        for (text, want) in [
            ("G", E::Shape),
            ("-1G", E::Shape),
            ("16X", E::Unit("X".into())),
            ("1.5G", E::Unit(".5G".into())),
            ("99999999999T", E::Overflow("99999999999T".into())),
            ("0M", E::Zero),
        ] {
            assert_eq!(text.parse::<ByteSize>(), Err(want), "{text}");
        }
    }

    #[test]
    fn duration_units() {
        assert_eq!("60s".parse::<Duration>().unwrap().get().as_secs(), 60);
        assert_eq!("2m".parse::<Duration>().unwrap().get().as_secs(), 120);
        assert_eq!("250ms".parse::<Duration>().unwrap().to_string(), "250ms");
        let unit = DurationError::Unit("days".into());
        assert_eq!("5 days".parse::<Duration>(), Err(unit));
        assert_eq!("s".parse::<Duration>(), Err(DurationError::Shape));
    }

    #[test]
    fn vm_name_rules() {
        assert!("win11".parse::<VmName>().is_ok());
        assert!("my_vm-2".parse::<VmName>().is_ok());
        assert_eq!("".parse::<VmName>(), Err(VmNameError::Empty));
        assert_eq!("../etc".parse::<VmName>(), Err(VmNameError::Char('.')));
        assert_eq!("-x".parse::<VmName>(), Err(VmNameError::Char('-')));
        assert_eq!("a b".parse::<VmName>(), Err(VmNameError::Char(' ')));
        assert_eq!("x".repeat(65).parse::<VmName>(), Err(VmNameError::TooLong));
    }
}
