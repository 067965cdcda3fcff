//! Reading a text file the operator names (the configuration), bounded: a device such as
//! `/dev/zero` or a pipe could be read for ever, and a file may grow while it is read.

use std::io::Read as _;
use std::path::Path;

/// The text of the file at `path`: a regular file of at most `max` bytes, in UTF-8. The error is
/// the reason alone, for the caller to put after the path.
pub(crate) fn read_text(path: &Path, max: u64) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let too_large = || format!("larger than {} MiB", max >> 20);
    if meta.len() > max {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Bounded even if the file grows while it is read.
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".into())
}
