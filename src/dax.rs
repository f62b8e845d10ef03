//! Device DAX and persistence domains, as sysfs describes them.
//!
//! A character device is a device-DAX instance (`/dev/daxX.Y`) when
//! `/sys/dev/char/MAJ:MIN/subsystem` resolves to a directory named `dax` (the `dax` class or
//! bus). Its size is `/sys/dev/char/MAJ:MIN/size`; its alignment the first of `align` there
//! (Linux 5.10 on), `device/align` and `device/dax_region/align`, or the page size when none
//! exists. Mappings of it must start and end on that alignment.
//!
//! Whether the platform flushes CPU caches itself on power loss (eADR) is the NVDIMM region's
//! `persistence_domain`: "cpu_cache" says so. It is the first such file found walking up from
//! the device's sysfs directory (`/sys/dev/char/MAJ:MIN` for device DAX, `/sys/dev/block/MAJ:MIN`
//! of the filesystem for a file), whose real path is under `.../regionN/...`.
//!
//! Every function takes the sysfs root, so that tests read a fake tree: [`sysfs_root`] is
//! `/sys`, or `$PFN_SYSFS_ROOT` (read once; for tests, since this machine has no DAX device).

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::encoding::PAGE_SIZE;
use crate::env;

/// The sysfs root: `/sys`, or `$PFN_SYSFS_ROOT` read once.
pub fn sysfs_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        env::with_var("PFN_SYSFS_ROOT", |v| match v {
            Some(v) if !v.is_empty() => PathBuf::from(OsStr::from_bytes(v)),
            _ => PathBuf::from("/sys"),
        })
    })
}

/// Which device number space `MAJ:MIN` is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevKind {
    Char,
    Block,
}

fn dev_dir(root: &Path, kind: DevKind, major: u32, minor: u32) -> PathBuf {
    let space = match kind {
        DevKind::Char => "char",
        DevKind::Block => "block",
    };
    root.join("dev")
        .join(space)
        .join(format!("{major}:{minor}"))
}

/// What a device-DAX instance offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes.
    pub size: u64,
    /// Mappings start and end on multiples of this (a power of two, at least a page).
    pub align: u64,
}

/// Why a requested piece of a device cannot be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misfit {
    Offset { offset: u64, align: u64 },
    Size { size: u64, align: u64 },
    Beyond { offset: u64, size: u64, device: u64 },
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Misfit::Offset { offset, align } => {
                write!(
                    f,
                    "offset {offset:#x} is not a multiple of the device alignment {align:#x}"
                )
            }
            Misfit::Size { size, align } => {
                write!(
                    f,
                    "size {size:#x} is not a multiple of the device alignment {align:#x}"
                )
            }
            Misfit::Beyond {
                offset,
                size,
                device,
            } => write!(
                f,
                "offset {offset:#x} + size {size:#x} is beyond the device's {device:#x} bytes"
            ),
        }
    }
}

impl Geometry {
    /// The bytes to map from `offset` for a request of `size` (0: up to the end).
    pub fn fit(&self, offset: u64, size: u64) -> Result<u64, Misfit> {
        let align = self.align;
        if offset % align != 0 {
            return Err(Misfit::Offset { offset, align });
        }
        let beyond = Misfit::Beyond {
            offset,
            size,
            device: self.size,
        };
        let size = if size == 0 {
            self.size
                .checked_sub(offset)
                .filter(|&n| n > 0)
                .ok_or(beyond)?
        } else {
            size
        };
        if size % align != 0 {
            return Err(Misfit::Size { size, align });
        }
        match offset.checked_add(size) {
            Some(end) if end <= self.size => Ok(size),
            _ => Err(beyond),
        }
    }
}

/// A number in a sysfs attribute: decimal, or hexadecimal after "0x".
fn parse_number(text: &str) -> Option<u64> {
    let t = text.trim();
    match t.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
}

fn read_number(path: &Path) -> io::Result<Option<u64>> {
    match fs::read_to_string(path) {
        Ok(text) => parse_number(&text)
            .map(Some)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The geometry of character device `major:minor` if it is a device-DAX instance, or None.
/// Errors: EINVAL when sysfs says it is one but its size or alignment is missing or makes no
/// sense; what reading sysfs reports otherwise.
pub fn device_dax(root: &Path, major: u32, minor: u32) -> io::Result<Option<Geometry>> {
    let dir = dev_dir(root, DevKind::Char, major, minor);
    let class = match fs::canonicalize(dir.join("subsystem")) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if class.file_name().and_then(|n| n.to_str()) != Some("dax") {
        return Ok(None);
    }
    let invalid = || io::Error::from_raw_os_error(libc::EINVAL);
    let size = read_number(&dir.join("size"))?.ok_or_else(invalid)?;
    let mut align = None;
    for place in ["align", "device/align", "device/dax_region/align"] {
        if let Some(a) = read_number(&dir.join(place))? {
            align = Some(a);
            break;
        }
    }
    let align = align.unwrap_or(PAGE_SIZE);
    if !align.is_power_of_two() || align < PAGE_SIZE || size == 0 || size % align != 0 {
        return Err(invalid());
    }
    Ok(Some(Geometry { size, align }))
}

/// Where stores are safe from power loss once they leave the CPU, per the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// eADR: the platform flushes CPU caches on power loss; a store is durable once visible.
    CpuCache,
    /// ADR: a store is durable once flushed out of the CPU caches.
    MemoryController,
    /// No region says (no NVDIMM region above the device, or an empty or unknown value).
    Unknown,
}

/// The persistence domain of the region above device `major:minor` (see the module comment).
pub fn persistence_domain(root: &Path, kind: DevKind, major: u32, minor: u32) -> Domain {
    let Ok(root) = fs::canonicalize(root) else {
        return Domain::Unknown;
    };
    let Ok(mut dir) = fs::canonicalize(dev_dir(&root, kind, major, minor)) else {
        return Domain::Unknown;
    };
    while dir.starts_with(&root) {
        match fs::read_to_string(dir.join("persistence_domain")) {
            Ok(text) => {
                return match text.trim() {
                    "cpu_cache" => Domain::CpuCache,
                    "memory_controller" => Domain::MemoryController,
                    _ => Domain::Unknown,
                }
            }
            Err(_) => {
                if !dir.pop() {
                    break;
                }
            }
        }
    }
    Domain::Unknown
}

#[cfg(test)]
pub(crate) mod fake {
    //! A fake sysfs tree in a temporary directory, shaped like a real one: class links
    //! under dev/char and dev/block pointing into devices/.../regionN/....

    use std::os::unix::fs::symlink;
    use std::path::{Path, PathBuf};

    pub struct Tree {
        pub root: PathBuf,
    }

    impl Tree {
        pub fn new(tag: &str) -> Tree {
            let root =
                std::env::temp_dir().join(format!("libpfn-sysfs-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            for d in [
                "dev/char",
                "dev/block",
                "class/dax",
                "class/mem",
                "devices/ndbus0/region0",
            ] {
                std::fs::create_dir_all(root.join(d)).unwrap();
            }
            Tree { root }
        }

        pub fn write(&self, rel: &str, text: &str) {
            let p = self.root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }

        /// A device directory in region0, linked from dev/<space>/<majmin>, of class `class`.
        pub fn device(&self, space: &str, majmin: &str, rel: &str, class: &str) -> PathBuf {
            let dir = self.root.join("devices/ndbus0/region0").join(rel);
            std::fs::create_dir_all(&dir).unwrap();
            let depth = Path::new(rel).components().count() + 3;
            let up = "../".repeat(depth);
            symlink(format!("{up}class/{class}"), dir.join("subsystem")).unwrap();
            symlink(
                format!("../../devices/ndbus0/region0/{rel}"),
                self.root.join("dev").join(space).join(majmin),
            )
            .unwrap();
            dir
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::Tree;
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_dax_device_is_found_with_its_size_and_alignment() {
        let t = Tree::new("geometry");
        let dir = t.device("char", "252:0", "dax0.0/dax/dax0.0", "dax");
        std::fs::write(dir.join("size"), "16777216\n").unwrap();
        // No align attribute anywhere: the page size.
        assert_eq!(
            device_dax(&t.root, 252, 0).unwrap(),
            Some(Geometry {
                size: 16 * MIB,
                align: PAGE_SIZE
            })
        );
        // The region's align (older kernels), then the device's own (newer), which wins.
        std::fs::create_dir_all(dir.join("device/dax_region")).unwrap();
        std::fs::write(dir.join("device/dax_region/align"), "2097152\n").unwrap();
        assert_eq!(device_dax(&t.root, 252, 0).unwrap().unwrap().align, 2 * MIB);
        std::fs::write(dir.join("align"), "0x40000000\n").unwrap();
        std::fs::write(dir.join("size"), "0x80000000\n").unwrap();
        assert_eq!(
            device_dax(&t.root, 252, 0).unwrap(),
            Some(Geometry {
                size: 2 << 30,
                align: 1 << 30
            })
        );
        // Nonsense is EINVAL, not a guess.
        for (size, align) in [
            ("0", "4096"),
            ("12288", "8192"),
            ("4096", "3000"),
            ("x", "4096"),
            ("8192", "2048"),
        ] {
            std::fs::write(dir.join("size"), size).unwrap();
            std::fs::write(dir.join("align"), align).unwrap();
            let e = device_dax(&t.root, 252, 0).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{size} {align}");
        }
        std::fs::remove_file(dir.join("size")).unwrap();
        assert_eq!(
            device_dax(&t.root, 252, 0).unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
    }

    #[test]
    fn other_character_devices_are_not_dax() {
        let t = Tree::new("notdax");
        t.device("char", "1:3", "null", "mem");
        assert_eq!(device_dax(&t.root, 1, 3).unwrap(), None);
        assert_eq!(device_dax(&t.root, 9, 9).unwrap(), None);
        assert_eq!(
            device_dax(Path::new("/nonexistent-root"), 252, 0).unwrap(),
            None
        );
    }

    #[test]
    fn requests_must_fit_the_alignment() {
        let g = Geometry {
            size: 8 * MIB,
            align: 2 * MIB,
        };
        assert_eq!(g.fit(0, 0), Ok(8 * MIB));
        assert_eq!(g.fit(2 * MIB, 0), Ok(6 * MIB));
        assert_eq!(g.fit(2 * MIB, 4 * MIB), Ok(4 * MIB));
        assert_eq!(
            g.fit(4096, 2 * MIB),
            Err(Misfit::Offset {
                offset: 4096,
                align: 2 * MIB
            })
        );
        assert_eq!(
            g.fit(0, MIB),
            Err(Misfit::Size {
                size: MIB,
                align: 2 * MIB
            })
        );
        assert!(matches!(g.fit(8 * MIB, 0), Err(Misfit::Beyond { .. })));
        assert!(matches!(
            g.fit(6 * MIB, 4 * MIB),
            Err(Misfit::Beyond { .. })
        ));
        assert!(matches!(
            g.fit(2 * MIB, u64::MAX - MIB + 1),
            Err(Misfit::Size { .. })
        ));
        assert!(matches!(
            g.fit(1 << 63, 1 << 63),
            Err(Misfit::Beyond { .. })
        ));
        let text = g.fit(4096, 2 * MIB).unwrap_err().to_string();
        assert_eq!(
            text,
            "offset 0x1000 is not a multiple of the device alignment 0x200000"
        );
    }

    #[test]
    fn the_persistence_domain_comes_from_the_region_above() {
        let t = Tree::new("domain");
        t.device("char", "252:0", "dax0.0/dax/dax0.0", "dax");
        t.device("block", "259:0", "namespace0.0/block/pmem0", "dax");
        assert_eq!(
            persistence_domain(&t.root, DevKind::Char, 252, 0),
            Domain::Unknown
        );
        t.write("devices/ndbus0/region0/persistence_domain", "cpu_cache\n");
        assert_eq!(
            persistence_domain(&t.root, DevKind::Char, 252, 0),
            Domain::CpuCache
        );
        assert_eq!(
            persistence_domain(&t.root, DevKind::Block, 259, 0),
            Domain::CpuCache
        );
        t.write(
            "devices/ndbus0/region0/persistence_domain",
            "memory_controller\n",
        );
        assert_eq!(
            persistence_domain(&t.root, DevKind::Block, 259, 0),
            Domain::MemoryController
        );
        t.write("devices/ndbus0/region0/persistence_domain", "\n");
        assert_eq!(
            persistence_domain(&t.root, DevKind::Block, 259, 0),
            Domain::Unknown
        );
        // No device, or a root that does not exist: nothing is claimed.
        assert_eq!(
            persistence_domain(&t.root, DevKind::Block, 8, 0),
            Domain::Unknown
        );
        assert_eq!(
            persistence_domain(Path::new("/nonexistent-root"), DevKind::Char, 252, 0),
            Domain::Unknown
        );
        // A file above the root is never read.
        let inner = t.root.join("inner");
        std::fs::create_dir_all(inner.join("dev/char")).unwrap();
        symlink_dir(
            &t.root.join("devices/ndbus0/region0/dax0.0/dax/dax0.0"),
            &inner.join("dev/char/252:0"),
        );
        assert_eq!(
            persistence_domain(&inner, DevKind::Char, 252, 0),
            Domain::Unknown
        );
    }

    fn symlink_dir(target: &Path, link: &Path) {
        std::os::unix::fs::symlink(target, link).unwrap();
    }

    #[test]
    fn numbers_parse_as_sysfs_writes_them() {
        assert_eq!(parse_number("4096\n"), Some(4096));
        assert_eq!(parse_number("0x200000"), Some(2 * MIB));
        assert_eq!(parse_number(" 12 "), Some(12));
        assert_eq!(parse_number(""), None);
        assert_eq!(parse_number("-1"), None);
        assert_eq!(parse_number("0xZZ"), None);
    }
}
