//! Fuzzes the command line through the path `main` takes (`args::parse`, the binary's own
//! file, then `Args::load`): the input split at NUL bytes is argv after the program's name. No
//! panics; a usage error is one line; a configuration error is one line per problem; what loads
//! validates. Arguments naming a config file (`-c`, `--config`) are dropped: the target reads
//! no files.
#![no_main]

#[path = "../../src/bin/tcp-router/args.rs"]
#[allow(dead_code)]
mod args;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut argv = vec!["tcp-router".to_string()];
    argv.extend(
        text.split('\0')
            .filter(|a| !a.starts_with("-c") && !a.starts_with("--c"))
            .map(String::from),
    );
    match args::parse(&argv) {
        Err(args::Early::Usage(line)) => assert!(!line.contains('\n'), "{argv:?}: {line}"),
        Err(args::Early::Print(help)) => assert!(help.contains("Usage"), "{argv:?}"),
        Ok(parsed) => match parsed.load() {
            Ok(config) => assert!(config.validate().is_ok(), "{argv:?}"),
            Err(tcp_router::Error::Config(lines)) => {
                assert!(!lines.is_empty(), "{argv:?}");
                assert!(lines.iter().all(|l| !l.is_empty() && !l.contains('\n')), "{argv:?}: {lines:?}");
            }
            Err(other) => panic!("{argv:?}: not a configuration error: {other}"),
        },
    }
});
