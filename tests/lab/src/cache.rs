//! The guest image cache under `target/lab-cache/`: a Debian 6.1 kernel fetched
//! with apt (extracted, depmod'ed) and a busybox initramfs built here.
//!
//! Every entry is built in a temporary path and renamed into place, and builds
//! run under an exclusive file lock, so tests building at once (threads or
//! processes) never see a half-written entry.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cpio::CpioWriter;
use crate::error::LabError;

/// The guest's /init.
const INIT_SCRIPT: &str = include_str!("../guest/init.sh");

/// Modules the initramfs loads to mount the 9p host root under an overlay;
/// their dependencies come from modules.dep.
const ROOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// Environment variable naming the guest kernel: a package name or a .deb path.
pub const KERNEL_ENV: &str = "VMRUN_LAB_KERNEL";

/// Host tools the lab runs.
#[derive(Debug, Clone)]
pub struct Tools {
    /// qemu-system-x86_64.
    pub qemu: PathBuf,
    /// A statically linked busybox, copied into the initramfs.
    pub busybox: PathBuf,
    depmod: PathBuf,
}

impl Tools {
    /// Finds every tool, or names the install command.
    pub fn find() -> Result<Tools, LabError> {
        let qemu = find_program("qemu-system-x86_64")?;
        let depmod = find_program("depmod")?;
        for tool in ["apt-get", "apt-cache", "dpkg", "dpkg-deb"] {
            find_program(tool)?;
        }
        // The guest's PATH is the system one, so a python3 only in pyenv or
        // a virtualenv does not count.
        if !Path::new("/usr/bin/python3").is_file() {
            return Err(LabError::MissingPrerequisite {
                what: "/usr/bin/python3 (package python3)".into(),
            });
        }
        let busybox = PathBuf::from("/bin/busybox");
        let bytes = fs::read(&busybox).map_err(|_| LabError::MissingPrerequisite {
            what: "a static busybox at /bin/busybox (package busybox-static)".into(),
        })?;
        if !is_static_elf(&bytes) {
            return Err(LabError::MissingPrerequisite {
                what: "a static busybox at /bin/busybox (package busybox-static; the dynamic `busybox` package cannot run in the initramfs)".into(),
            });
        }
        Ok(Tools {
            qemu,
            busybox,
            depmod,
        })
    }
}

/// Looks a program up in PATH, plus the sbin folders a non-root PATH lacks.
pub fn find_program(name: &str) -> Result<PathBuf, LabError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| LabError::MissingPrerequisite {
            what: format!("`{name}` (not found in PATH)"),
        })
}

/// True for an ELF executable without a PT_INTERP program header, i.e. one
/// that needs no dynamic loader.
fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    };
    // 64-bit little-endian ELF only: that is what busybox-static is on amd64.
    if bytes.get(..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).all(|i| u32_at(phoff + i * phentsize).is_some_and(|t| t != PT_INTERP))
}

/// Runs a command, turning a failure into an error that shows its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<Output, LabError> {
    let command = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| LabError::Command {
        command: command.clone(),
        status: "could not start".into(),
        stderr: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// The workspace's target folder: `CARGO_TARGET_DIR`, else the nearest
/// `target/` above this crate (the workspace root's).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or(manifest)
        .join("target")
}

/// A kernel and initramfs ready to boot.
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// The kernel's release string (`uname -r` in the guest).
    pub version: String,
    /// bzImage.
    pub kernel: PathBuf,
    /// The newc initramfs.
    pub initramfs: PathBuf,
    /// The host folder bound onto the guest's /lib/modules.
    pub modules: PathBuf,
}

/// Where the guest kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KernelSource {
    Package(String),
    Deb(PathBuf),
    /// Already in the cache; apt knows no package (offline, no lists).
    Cached(String),
}

/// Makes sure the cache holds a kernel and initramfs, building what is missing.
pub fn prepare(cache: &Path, tools: &Tools) -> Result<GuestImage, LabError> {
    fs::create_dir_all(cache).map_err(LabError::io("create", cache))?;
    let lock_path = cache.join("build.lock");
    let lock = File::create(&lock_path).map_err(LabError::io("create", &lock_path))?;
    lock.lock().map_err(LabError::io("lock", &lock_path))?;

    remove_stale_builds(cache);
    let source = kernel_source(cache)?;
    let kernel_dir = ensure_kernel(cache, tools, &source)?;
    let version = kernel_dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("kernel-"))
        .expect("kernel dirs are named kernel-VERSION")
        .to_string();
    let modules = kernel_dir.join("lib/modules");
    let initramfs = ensure_initramfs(cache, tools, &version, &modules.join(&version))?;
    Ok(GuestImage {
        kernel: kernel_dir.join(format!("boot/vmlinuz-{version}")),
        initramfs,
        modules,
        version,
    })
}

/// Removes what builders killed mid-way left behind. Only called under the
/// build lock, which every builder holds while building.
fn remove_stale_builds(cache: &Path) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().contains(".tmp-") {
            let path = entry.path();
            let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
        }
    }
}

fn kernel_source(cache: &Path) -> Result<KernelSource, LabError> {
    if let Some(value) = std::env::var_os(KERNEL_ENV) {
        let value = PathBuf::from(value);
        if value.extension().is_some_and(|e| e == "deb") {
            return Ok(KernelSource::Deb(value));
        }
        return Ok(KernelSource::Package(value.to_string_lossy().into_owned()));
    }
    let out = run(Command::new("apt-cache").args([
        "search",
        "--names-only",
        "^linux-image-6.1.0-[0-9]+-amd64$",
    ]))?;
    let listing = String::from_utf8_lossy(&out.stdout);
    if let Some(name) = newest_kernel_package(&listing) {
        return Ok(KernelSource::Package(name));
    }
    // Offline with a warm cache: keep using what is there.
    let cached = fs::read_dir(cache)
        .map_err(LabError::io("list", cache))?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("kernel-")
                .map(String::from)
        })
        .filter(|v| !v.contains(".tmp"))
        .max_by_key(|v| abi_number(&format!("linux-image-{v}")));
    cached
        .map(KernelSource::Cached)
        .ok_or(LabError::NoKernelPackage)
}

/// The ABI number N of `linux-image-6.1.0-N-amd64`.
fn abi_number(package: &str) -> Option<u32> {
    package
        .strip_prefix("linux-image-6.1.0-")?
        .strip_suffix("-amd64")?
        .parse()
        .ok()
}

/// Picks the highest N among `apt-cache search` lines "NAME - description".
fn newest_kernel_package(listing: &str) -> Option<String> {
    listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| abi_number(name).map(|n| (n, name.to_string())))
        .max()
        .map(|(_, name)| name)
}

fn ensure_kernel(cache: &Path, tools: &Tools, source: &KernelSource) -> Result<PathBuf, LabError> {
    let package = match source {
        KernelSource::Package(name) => name.clone(),
        KernelSource::Cached(version) => return Ok(cache.join(format!("kernel-{version}"))),
        KernelSource::Deb(path) => {
            let out = run(Command::new("dpkg-deb").arg("-f").arg(path).arg("Package"))?;
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    };
    let version = package
        .strip_prefix("linux-image-")
        .filter(|v| !v.is_empty() && !v.contains('/'))
        .ok_or_else(|| LabError::Command {
            command: format!("{KERNEL_ENV}={package}"),
            status: "not a kernel package".into(),
            stderr: "expected linux-image-VERSION, e.g. linux-image-6.1.0-26-amd64".into(),
        })?
        .to_string();
    let final_dir = cache.join(format!("kernel-{version}"));
    if final_dir.is_dir() {
        return Ok(final_dir);
    }

    let tmp = cache.join(format!("kernel-{version}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(LabError::io("create", &tmp))?;
    let deb = match source {
        KernelSource::Deb(path) => path.clone(),
        _ => {
            run(Command::new("apt-get")
                .args(["download", "-q", &package])
                .current_dir(&tmp))?;
            fs::read_dir(&tmp)
                .map_err(LabError::io("list", &tmp))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|e| e == "deb"))
                .ok_or_else(|| LabError::Command {
                    command: format!("apt-get download {package}"),
                    status: "no .deb".into(),
                    stderr: format!("nothing was downloaded into {}", tmp.display()),
                })?
        }
    };
    let root = tmp.join("root");
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
    // depmod -b only looks in BASE/lib/modules; newer packages ship usr/lib/modules.
    let lib = root.join("lib");
    if !lib.join("modules").is_dir() && root.join("usr/lib/modules").is_dir() {
        fs::create_dir_all(&lib).map_err(LabError::io("create", &lib))?;
        fs::rename(root.join("usr/lib/modules"), lib.join("modules"))
            .map_err(LabError::io("move", &lib))?;
    }
    run(Command::new(&tools.depmod)
        .arg("-b")
        .arg(&root)
        .arg(&version))?;
    if !root.join(format!("boot/vmlinuz-{version}")).is_file() {
        return Err(LabError::Command {
            command: format!("dpkg -x {}", deb.display()),
            status: "no kernel".into(),
            stderr: format!("boot/vmlinuz-{version} is not in the package"),
        });
    }
    rename_into_place(&root, &final_dir)?;
    let _ = fs::remove_dir_all(&tmp);
    Ok(final_dir)
}

/// Renames a finished build into place; if another builder won the race, its
/// (identical) entry stays and ours is dropped.
fn rename_into_place(built: &Path, target: &Path) -> Result<(), LabError> {
    match fs::rename(built, target) {
        Ok(()) => Ok(()),
        Err(_) if target.exists() => Ok(()),
        Err(e) => Err(LabError::Io {
            action: "move into place",
            path: target.to_path_buf(),
            source: e,
        }),
    }
}

/// The modules to insmod, dependencies first, as paths relative to the
/// modules folder.
fn module_load_order(modules_dir: &Path) -> Result<Vec<String>, LabError> {
    let dep_path = modules_dir.join("modules.dep");
    let dep_text = fs::read_to_string(&dep_path).map_err(LabError::io("read", &dep_path))?;
    let builtin_path = modules_dir.join("modules.builtin");
    let builtin = fs::read_to_string(&builtin_path).unwrap_or_default();
    let deps = parse_modules_dep(&dep_text);

    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for name in ROOT_MODULES {
        let Some(path) = deps
            .iter()
            .map(|(p, _)| p)
            .find(|p| module_name(p) == *name)
        else {
            if builtin.lines().any(|l| module_name(l) == *name) {
                continue;
            }
            return Err(LabError::Command {
                command: format!("look up {name} in {}", dep_path.display()),
                status: "missing module".into(),
                stderr: format!("{name} is neither a module nor built in"),
            });
        };
        visit(path, &deps, &mut seen, &mut order);
    }
    Ok(order)
}

fn visit(
    path: &str,
    deps: &[(String, Vec<String>)],
    seen: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) {
    if !seen.insert(path.to_string()) {
        return;
    }
    if let Some((_, needs)) = deps.iter().find(|(p, _)| p == path) {
        for need in needs {
            visit(need, deps, seen, order);
        }
    }
    order.push(path.to_string());
}

/// modules.dep lines: `kernel/fs/9p/9p.ko: kernel/fs/netfs/netfs.ko ...`.
fn parse_modules_dep(text: &str) -> Vec<(String, Vec<String>)> {
    text.lines()
        .filter_map(|line| {
            let (module, deps) = line.split_once(':')?;
            Some((
                module.to_string(),
                deps.split_whitespace().map(String::from).collect(),
            ))
        })
        .collect()
}

/// `kernel/drivers/virtio/virtio_pci.ko` -> `virtio_pci` (dashes count as underscores).
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split('.').next().unwrap_or(file).replace('-', "_")
}

/// FNV-1a: a stable content hash for cache keys (std's hasher may change
/// between Rust releases).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

fn ensure_initramfs(
    cache: &Path,
    tools: &Tools,
    version: &str,
    modules_dir: &Path,
) -> Result<PathBuf, LabError> {
    let order = module_load_order(modules_dir)?;
    let busybox = fs::read(&tools.busybox).map_err(LabError::io("read", &tools.busybox))?;
    let key = fnv1a(&[
        version.as_bytes(),
        INIT_SCRIPT.as_bytes(),
        order.join("\n").as_bytes(),
        &busybox,
    ]);
    let path = cache.join(format!("initramfs-{version}-{key:016x}.cpio"));
    if path.is_file() {
        return Ok(path);
    }

    let applets = run(Command::new(&tools.busybox).arg("--list-full"))?;
    let applets = String::from_utf8_lossy(&applets.stdout).into_owned();
    let mut cpio = CpioWriter::new(Vec::new());
    let write_err = LabError::io("build", &path);
    let build = |cpio: &mut CpioWriter<Vec<u8>>| -> std::io::Result<Vec<String>> {
        for dir in [
            "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "root",
            "lower", "rw", "newroot", "scratch", "modules",
        ] {
            cpio.dir(dir, 0o755)?;
        }
        // The kernel opens /dev/console for /init before anything is mounted.
        cpio.char_dev("dev/console", 0o600, 5, 1)?;
        cpio.file("bin/busybox", 0o755, &busybox)?;
        for applet in applets
            .lines()
            .map(str::trim)
            .filter(|a| !a.is_empty() && *a != "bin/busybox")
        {
            cpio.symlink(applet, "/bin/busybox")?;
        }
        cpio.file("init", 0o755, INIT_SCRIPT.as_bytes())?;
        let mut names = Vec::new();
        for module in &order {
            let data = fs::read(modules_dir.join(module))?;
            let name = module.rsplit('/').next().unwrap_or(module).to_string();
            cpio.file(&format!("modules/{name}"), 0o644, &data)?;
            names.push(name);
        }
        cpio.file(
            "modules/order",
            0o644,
            format!("{}\n", names.join("\n")).as_bytes(),
        )?;
        Ok(names)
    };
    build(&mut cpio).map_err(LabError::io("build", &path))?;
    let bytes = cpio.finish().map_err(write_err)?;

    let tmp = path.with_extension(format!("cpio.tmp-{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(LabError::io("write", &tmp))?;
    rename_into_place(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_kernel_package_picks_highest_abi_number() {
        let listing = "linux-image-6.1.0-9-amd64 - Linux 6.1\nlinux-image-6.1.0-26-amd64 - Linux 6.1\n\
                       linux-image-6.1.0-100-amd64 - Linux 6.1\nlinux-image-6.1.0-27-amd64-dbg - debug\n";

        assert_eq!(
            newest_kernel_package(listing).as_deref(),
            Some("linux-image-6.1.0-100-amd64")
        );
    }

    #[test]
    fn newest_kernel_package_of_empty_listing_is_none() {
        assert_eq!(newest_kernel_package(""), None);
    }

    #[test]
    fn load_order_puts_dependencies_first() {
        let deps = parse_modules_dep(
            "kernel/fs/9p/9p.ko: kernel/fs/netfs/netfs.ko kernel/net/9p/9pnet.ko\n\
             kernel/net/9p/9pnet.ko:\nkernel/fs/netfs/netfs.ko: kernel/fs/fscache/fscache.ko\n\
             kernel/fs/fscache/fscache.ko:\n",
        );
        let mut order = Vec::new();

        visit(
            "kernel/fs/9p/9p.ko",
            &deps,
            &mut BTreeSet::new(),
            &mut order,
        );

        assert_eq!(
            order,
            [
                "kernel/fs/fscache/fscache.ko",
                "kernel/fs/netfs/netfs.ko",
                "kernel/net/9p/9pnet.ko",
                "kernel/fs/9p/9p.ko"
            ]
        );
    }

    #[test]
    fn module_name_strips_folder_and_extension() {
        assert_eq!(
            module_name("kernel/drivers/virtio/virtio-pci.ko.xz"),
            "virtio_pci"
        );
    }

    #[test]
    fn missing_program_names_the_install_command() {
        let err = find_program("vmrun-lab-no-such-program").unwrap_err();

        assert!(matches!(err, LabError::MissingPrerequisite { .. }));
        assert!(err.to_string().contains(crate::INSTALL_HINT), "{err}");
    }

    #[test]
    fn host_busybox_check_rejects_dynamic_binaries() {
        let sh = fs::read("/bin/sh").expect("/bin/sh");
        assert!(!is_static_elf(&sh));
    }
}
