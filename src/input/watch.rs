//! Wakes the supervisor when a configured input device may have come or
//! gone, without polling: inotify on the deepest existing directory above
//! each path. udev makes `/dev/input/by-id/NAME` (a rename into place, so
//! IN_MOVED_TO or IN_CREATE) after devtmpfs made the node, and removes
//! `by-id/` itself with its last link; watching the nearest ancestor that
//! exists, re-resolved after every event, follows all of that. The
//! callers compare what each path points at before and after, so a missed
//! or spurious wakeup costs one `stat`.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;

struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

pub(crate) struct Watch {
    fd: AsyncFd<Fd>,
    paths: Vec<PathBuf>,
}

impl Watch {
    pub(crate) fn new(paths: Vec<PathBuf>) -> std::io::Result<Self> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        // `AsyncFd::new` is deprecated because a `T` could close its fd while
        // registered; `Fd` owns the inotify fd and only closes it on drop,
        // after the registration (the safe alternative is `unsafe fn`).
        #[allow(deprecated)]
        let fd = AsyncFd::new(Fd(inotify))?;
        let watch = Self { fd, paths };
        watch.rewatch();
        Ok(watch)
    }

    /// Watches the nearest existing directory above every path. Adding a
    /// watch twice returns the same descriptor; those of removed
    /// directories the kernel drops by itself (IN_IGNORED).
    fn rewatch(&self) {
        let mask = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_ONLYDIR;
        for p in &self.paths {
            if let Some(dir) = nearest_dir(p) {
                if let Err(e) = self.fd.get_ref().0.add_watch(dir, mask) {
                    tracing::debug!("inotify on {}: {e}", dir.display());
                }
            }
        }
    }

    /// Returns after something changed in a watched directory.
    pub(crate) async fn changed(&mut self) {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return std::future::pending().await;
            };
            match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from)) {
                Ok(Ok(events)) if !events.is_empty() => break,
                Ok(Ok(_)) | Err(_) => continue,
                Ok(Err(e)) => {
                    // Not EAGAIN: it would fail the same way every time.
                    tracing::warn!(
                        "input: inotify stopped working ({e}); replugged devices are not noticed"
                    );
                    return std::future::pending().await;
                }
            }
        }
        self.rewatch();
    }
}

fn nearest_dir(path: &Path) -> Option<&Path> {
    path.ancestors().skip(1).find(|d| d.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_link_appearing_in_a_new_directory_wakes_the_watch() {
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("by-id/usb-kbd-event-kbd");
        rt().block_on(async {
            let mut w = Watch::new(vec![link.clone()]).unwrap();
            // by-id/ appears: the parent's watch fires, and by-id/ is watched.
            std::fs::create_dir(tmp.path().join("by-id")).unwrap();
            tokio::time::timeout(Duration::from_secs(5), w.changed())
                .await
                .unwrap();
            std::os::unix::fs::symlink("../event3", &link).unwrap();
            tokio::time::timeout(Duration::from_secs(5), w.changed())
                .await
                .unwrap();
            // Nothing else happens: no wakeup.
            let idle = tokio::time::timeout(Duration::from_millis(100), w.changed()).await;
            assert!(idle.is_err());
        });
    }
}
