//! Small filesystem helpers shared by the stages that make vmrun's own
//! directories (prepare's device locks, swtpm's state, the supervisor's
//! run dir). Below all of them, so none imports another for it.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// A directory that could not be made.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub(crate) struct DirError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Creates `dir` and its missing parents, mode 0700: vmrun's run and state
/// dirs hold sockets and journals that only root may reach.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), DirError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| DirError {
            path: dir.to_path_buf(),
            source,
        })
}
