//! QEMU's `-opt key=value,key=value` strings, built from parts.
//!
//! QEMU's option parser (util/qemu-option.c, `get_opt_value`) ends a value at
//! the first `,` unless it is doubled: `,,` stands for a literal comma. Every
//! value here is escaped that way, so a path with commas or spaces survives
//! (spaces need nothing: argv elements never pass through a shell).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// One option string such as `vfio-pci,host=0000:01:00.0,x-vga=on`.
#[derive(Debug, Clone, Default)]
pub struct Opts(Vec<u8>);

impl Opts {
    /// Starts with a bare first element (a driver or backend name).
    pub fn new(head: impl AsRef<OsStr>) -> Self {
        let mut opts = Self::default();
        opts.push_escaped(head.as_ref());
        opts
    }

    /// Starts with no bare first element: the first `set` has no comma before it.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Appends `key=value`, escaping commas in the value.
    pub fn set(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.separator();
        self.0.extend_from_slice(key.as_bytes());
        self.0.push(b'=');
        self.push_escaped(value.as_ref());
        self
    }

    /// Appends `key=value` when `value` is `Some`.
    pub fn set_opt(self, key: &str, value: Option<impl AsRef<OsStr>>) -> Self {
        match value {
            Some(v) => self.set(key, v),
            None => self,
        }
    }

    /// Appends `key=on` or `key=off` (never QEMU's deprecated bare `key`/`nokey`).
    pub fn switch(self, key: &str, on: bool) -> Self {
        self.set(key, if on { "on" } else { "off" })
    }

    /// Appends `key=on` only when `on` is true.
    pub fn flag(self, key: &str, on: bool) -> Self {
        if on {
            self.switch(key, true)
        } else {
            self
        }
    }

    /// Appends a bare element (a `-cpu` flag such as `+topoext`), escaped.
    pub fn item(mut self, item: impl AsRef<OsStr>) -> Self {
        self.separator();
        self.push_escaped(item.as_ref());
        self
    }

    fn separator(&mut self) {
        if !self.0.is_empty() {
            self.0.push(b',');
        }
    }

    fn push_escaped(&mut self, value: &OsStr) {
        for &b in value.as_bytes() {
            self.0.push(b);
            if b == b',' {
                self.0.push(b',');
            }
        }
    }

    pub fn into_os_string(self) -> OsString {
        OsString::from_vec(self.0)
    }
}

impl From<Opts> for OsString {
    fn from(opts: Opts) -> Self {
        opts.into_os_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_commas_are_doubled() {
        let s = Opts::new("file")
            .set("filename", "/vm/a,b c.qcow2")
            .into_os_string();
        assert_eq!(s, "file,filename=/vm/a,,b c.qcow2");
    }

    #[test]
    fn switches_are_spelled_on_off() {
        let s = Opts::new("socket")
            .switch("server", true)
            .switch("wait", false)
            .flag("x-vga", false)
            .into_os_string();
        assert_eq!(s, "socket,server=on,wait=off");
    }

    #[test]
    fn empty_head_has_no_leading_comma() {
        let s = Opts::empty()
            .set("guest", "win11")
            .switch("debug-threads", true);
        assert_eq!(s.into_os_string(), "guest=win11,debug-threads=on");
    }

    #[test]
    fn non_utf8_paths_pass_through() {
        let path = OsStr::from_bytes(b"/vm/\xff.img");
        let s = Opts::new("file").set("filename", path).into_os_string();
        assert_eq!(s.as_bytes(), b"file,filename=/vm/\xff.img");
    }
}
