//! The pid file (`--pid-file` or rinetd's `pidlogfile`), so `kill -HUP $(cat FILE)` works.

use std::io;
use std::path::{Path, PathBuf};

/// The pid file, removed when dropped (at exit).
#[derive(Debug)]
pub(crate) struct PidFile(PathBuf);

impl PidFile {
    /// Writes this process's id to `path`.
    pub(crate) fn write(path: &Path) -> io::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id()))?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
