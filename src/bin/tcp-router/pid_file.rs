//! The pid file (`--pid-file` or rinetd's `pidlogfile`), so `kill -HUP $(cat FILE)` works.
//!
//! Written as a new file beside the path (created exclusively, so nothing planted there is
//! followed), given mode 0644 whatever the umask, then renamed over the path: a symlink planted
//! at the path is replaced, never written through. Removed at exit only while it still names
//! this process, so a second instance with the same path, or the new process of a live upgrade,
//! keeps its own.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The pid file's mode: readable by everyone (scripts and service managers read it), written by
/// its owner.
const MODE: u32 = 0o644;

/// The pid file, removed when dropped (at exit) if it still holds this process's id.
#[derive(Debug)]
pub(crate) struct PidFile(Option<PathBuf>);

impl PidFile {
    /// Writes this process's id to `path`.
    pub(crate) fn write(path: &Path) -> io::Result<PidFile> {
        let temp = temp_path(path);
        let written = write_new(&temp, &contents());
        let renamed = written.and_then(|()| fs::rename(&temp, path));
        if renamed.is_err() {
            let _ = fs::remove_file(&temp);
        }
        renamed.map(|()| PidFile(Some(path.to_path_buf())))
    }

    /// Leaves the file in place at exit: it names another process now (the new one of a live
    /// upgrade).
    pub(crate) fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let Some(path) = &self.0 else { return };
        // Another process's file now (a second instance, or a successor): leave it.
        if fs::read_to_string(path).is_ok_and(|text| text == contents()) {
            let _ = fs::remove_file(path);
        }
    }
}

/// What the file holds: this process's id and a newline.
fn contents() -> String {
    format!("{}\n", std::process::id())
}

/// A name beside `path` (the same directory, so the rename cannot cross file systems) that no
/// other process of ours uses.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Creates `path` (which must not exist: `O_EXCL` follows no link) with [`MODE`] and `text`.
fn write_new(path: &Path, text: &str) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MODE)
        .open(path)?;
    // The umask may have taken bits the mode asked for (or a umask of 000 none): set it exactly.
    file.set_permissions(Permissions::from_mode(MODE))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}
