//! Fuzzes the config file parser (rinetd lines, `route` lines and their keys, allow/deny,
//! logfile, admin): no panics reading any bytes, errors as `FILE:LINE: message`, and for a file
//! that parses, no panics validating it, nor in `check` when it needs no DNS (which then refuses
//! only a log file it cannot open).
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tcp_router::config::{Config, Host, Settings};

/// The file the input is written to (`from_file` is the only public way in, and it reads a
/// path): one per process, reused by every run, on the RAM disk where there is one (rewriting a
/// file on disk costs more than parsing it). Scratch directories of processes gone are removed.
fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("tcp-router-fuzz-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = base.join(format!("tcp-router-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        dir.join("fuzz.conf")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = path();
    std::fs::write(path, data).expect("write the input");
    let config = match Config::from_file(path, &Settings::default()) {
        Ok(config) => config,
        Err(errors) => {
            assert!(!errors.is_empty());
            if std::str::from_utf8(data).is_ok() {
                // Every problem is `FILE:LINE: message`, the line one of the file's.
                let lines = data.split(|&b| b == b'\n').count();
                let prefix = format!("{}:", path.display());
                for error in &errors {
                    let rest = error.strip_prefix(&prefix).expect(error);
                    let (line, _) = rest.split_once(": ").expect(error);
                    let line: usize = line.parse().expect(error);
                    assert!((1..=lines.max(1)).contains(&line), "{error}");
                }
            }
            return;
        }
    };
    assert!(config.listeners.iter().all(|l| !l.routes.is_empty()));
    if config.validate().is_err() {
        return;
    }
    // `check` resolves host names: only call it when every address is an IP literal.
    let ip = |host: &Host| matches!(host, Host::Ip(_));
    let literal = config.listeners.iter().all(|l| {
        ip(&l.listen.host)
            && l.routes
                .iter()
                .all(|r| r.upstreams.iter().all(|u| ip(&u.host)))
    });
    if literal {
        match tcp_router::check(&config, Some("a.example.com")) {
            Ok(summary) => assert!(summary.starts_with("configuration OK"), "{summary}"),
            // Without DNS, all `check` can refuse is a log file it could not open for appending.
            Err(errors) => assert!(
                config.logfile.is_some() && errors.iter().all(|e| e.starts_with("log file '")),
                "{errors:?}"
            ),
        }
    }
});
