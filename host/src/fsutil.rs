//! Small file-system helpers shared by the rooms that write files (the
//! compiled-code cache, the plugin listing, the CLI).

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file in the same directory,
/// flushed, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut nonce = [0u8; 6];
    getrandom::getrandom(&mut nonce).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(nonce)));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode.unwrap_or(0o644));
    }
    #[cfg(not(unix))]
    let _ = mode;
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Logs a warning when `path`, a file holding secrets (`what` names it for the
/// operator), can be read by every user or written by its group. Group read is
/// allowed: a root-owned file readable by the service's group (`0640
/// root:stockade`) is the usual way to hand a service a secret. The file is
/// still used: refusing would turn a permissions slip into an outage.
pub fn warn_if_exposed(path: &Path, what: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o027 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    "{what} has mode {mode:03o}: other users can read it; run `chmod 600 {}`",
                    path.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what);
}
