//! The `tcp-router` binary: parse the command line, start logging, run, map the result to an exit code.

use std::io::LineWriter;
use std::process::ExitCode;

use argh::FromArgs;
use simplelog::{ConfigBuilder, LevelFilter, WriteLogger};
use tcp_router::cli::Args;
use tcp_router::error::Chain;
use tcp_router::server::Reloader;
use tcp_router::Config;

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    if args.version {
        println!("tcp-router {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if args.check {
        return check(&args);
    }
    init_logging(args.log_level);
    let result = Config::load(&args).and_then(|config| {
        let reloader: Option<Reloader> = config.config_file.is_some().then(|| {
            let args = args.clone();
            Box::new(move || Config::load(&args)) as Reloader
        });
        tcp_router::run(config, reloader)
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            // Configuration errors come one per line (`FILE:LINE: message`); each gets the prefix.
            for line in Chain(&err).to_string().lines() {
                eprintln!("tcp-router: {line}");
            }
            ExitCode::from(err.exit_code())
        }
    }
}

/// `--check`: the summary on stdout and exit 0, or every error on stderr and exit 2.
fn check(args: &Args) -> ExitCode {
    match tcp_router::check::check(args) {
        Ok(summary) => {
            print!("{summary}");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for error in errors {
                eprintln!("{error}");
            }
            ExitCode::from(2)
        }
    }
}

/// Parses argv with argh, but with our exit codes: help on stdout with 0, a usage error as one line
/// on stderr with 2.
fn parse_args() -> Result<Args, ExitCode> {
    let argv: Vec<String> = std::env::args().collect();
    let strs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let command = strs.first().map_or("tcp-router", |c| {
        c.rsplit('/').next().unwrap_or("tcp-router")
    });
    Args::from_args(&[command], strs.get(1..).unwrap_or(&[])).map_err(|early| match early.status {
        Ok(()) => {
            print!("{}", early.output);
            ExitCode::SUCCESS
        }
        Err(()) => {
            let first = early.output.lines().next().unwrap_or("invalid arguments");
            eprintln!("tcp-router: {first} (see --help)");
            ExitCode::from(2)
        }
    })
}

/// Logs to stderr, one line per record, and routes panics through the log so a bug in one
/// connection is reported like everything else instead of as a raw backtrace.
fn init_logging(level: LevelFilter) {
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .build();
    // LineWriter: one write(2) per record, so concurrent lines never interleave mid-line.
    let _ = WriteLogger::init(level, config, LineWriter::new(std::io::stderr()));
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        log::error!(
            "BUG: panic in thread '{}': {info}",
            thread.name().unwrap_or("unnamed")
        );
    }));
}
