//! The `tcp-router` binary: parse the command line, start logging, take the process-wide
//! settings the library leaves alone (scheduling policy, open-files limit, signals, pid file,
//! the environment), serve, and map the result to an exit code.

#![forbid(unsafe_code)]

mod activation;
mod args;
mod environment;
mod notify;
mod pid_file;
mod signals;
mod upgrade;

use std::error::Error as _;
use std::io::LineWriter;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use simplelog::{ConfigBuilder, LevelFilter, WriteLogger};
use tcp_router::{process, Config, Error, Forwarder};

use args::Args;
use environment::Environment;
use pid_file::PidFile;

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    if args.version {
        print_out(&format!("tcp-router {}\n", env!("CARGO_PKG_VERSION")));
        return ExitCode::SUCCESS;
    }
    if args.check {
        return check(&args);
    }
    init_logging(args.log_level);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // Configuration errors come one per line (`FILE:LINE: message`); each gets the prefix.
            for line in failure.lines() {
                eprintln!("tcp-router: {line}");
            }
            ExitCode::from(failure.exit_code())
        }
    }
}

/// Serves until SIGINT or SIGTERM, then drains.
fn run(args: Args) -> Result<(), Failure> {
    // First, while this is the only thread: what the service manager passed is read (and its
    // variables removed from the environment), and threads inherit the scheduling policy when
    // they are created.
    let mut environment = Environment::take();
    let passed = activation::take(&mut environment).map_err(Failure::Activation)?;
    let notifier = notify::Notifier::connect_to(environment.notify_socket.as_deref());
    let watchdog = notify::watchdog(
        environment.watchdog_usec.as_deref(),
        environment.watchdog_pid.as_deref(),
    );
    let predecessor = environment.predecessor;
    let config = load(&args)?;
    if !config.splice {
        log::info!(
            "{} is set: moving bytes through buffers, not splice",
            environment::NO_SPLICE_ENV
        );
    }
    let scheduler = process::apply_scheduler(args.scheduler);
    let open_files = process::raise_open_files_limit();
    let forwarder = match &predecessor {
        // Started by a live upgrade: everything comes from the old process.
        Some(path) => take_over(&config, path)?,
        None => {
            let sockets = activation::assign(&config, passed).map_err(Failure::Activation)?;
            Forwarder::from_config_with(&config, sockets)?
        }
    };
    log::info!(
        "max connections: {} ({}; open-files limit {open_files}, thread limit {}); scheduler: {scheduler}",
        forwarder.max_connections(),
        if config.max_connections.is_some() {
            "set by --max-connections"
        } else {
            "derived from the limits"
        },
        process::thread_limit()
    );
    let handle = forwarder.handle();
    let upgrader = upgrade::Upgrader::new(handle.clone(), notifier.clone(), watchdog);
    let reload: signals::Reload = Box::new(move || args.config.is_some().then(|| load(&args)));
    signals::install(
        handle.clone(),
        reload,
        notifier.clone(),
        Arc::clone(&upgrader),
    )
    .map_err(|source| Error::Setup {
        what: "install signal handlers",
        source,
    })?;
    // Written once the signals are handled: `kill -HUP $(cat FILE)` must never find the default
    // action (which would end the process).
    let pid_file = match &config.pid_file {
        Some(path) => Some(PidFile::write(path).map_err(|source| Failure::PidFile {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    if let Some(notifier) = notifier {
        if predecessor.is_some() {
            notifier.taken_over(&handle.status());
        } else {
            notifier.ready(&handle.status());
        }
        notify::keep_informed(notifier, handle, watchdog);
    }
    forwarder.serve()?;
    upgrader.finish();
    if let Some(pid_file) = pid_file.filter(|_| upgrader.handed_over()) {
        // The pid file names the new process now.
        pid_file.keep();
    }
    Ok(())
}

/// A live upgrade's new process: takes every listener and connection from the old one, and
/// waits until it has let go (so the pid file and the service manager follow this process).
fn take_over(config: &tcp_router::Config, path: &std::path::Path) -> Result<Forwarder, Failure> {
    // The old process started this one and waits for it: still the parent now, not later.
    let old_pid = std::os::unix::process::parent_id();
    let channel = upgrade::connect(path)?;
    let (forwarder, taken) = Forwarder::take_over(config, channel).map_err(|err| match err {
        Error::Upgrade(why) => Error::Upgrade(format!("upgrade failed: {why}")),
        other => other,
    })?;
    log::info!(
        "upgrade: took over {} listening socket(s) and {} connection(s) from pid {}",
        taken.listeners,
        taken.connections,
        old_pid
    );
    taken.wait_released(std::time::Duration::from_secs(5));
    Ok(forwarder)
}

/// The configuration the arguments name, with what the environment switches
/// (`TCP_ROUTER_NO_SPLICE`): at start, at each reload and for `--check` alike.
fn load(args: &Args) -> Result<Config, Error> {
    let mut config = args.load()?;
    config.splice = !environment::no_splice();
    Ok(config)
}

/// `--check`: the summary on stdout and exit 0, or every error on stderr and exit 2.
fn check(args: &Args) -> ExitCode {
    let checked = load(args).and_then(|config| {
        let mut summary =
            tcp_router::check(&config, args.explain.as_deref()).map_err(Error::Config)?;
        if let Some(sample) = &args.explain_bytes {
            let explained = tcp_router::explain_bytes(&config, sample);
            summary.push_str(&explained.map_err(|why| Error::Config(vec![why]))?);
        }
        Ok((summary, config))
    });
    match checked {
        Ok((_, config)) if args.probe => probe(&config),
        Ok((summary, _)) => {
            print_out(&summary);
            ExitCode::SUCCESS
        }
        Err(err) => {
            // One line per problem; past the first MAX_ERRORS_SHOWN, a count.
            eprintln!("{err}");
            ExitCode::from(2)
        }
    }
}

/// `--check --probe`: the table of every member's state on stdout; exit 0 if every route has a
/// member up, else each route without one on stderr and exit 1.
fn probe(config: &tcp_router::Config) -> ExitCode {
    let probed = tcp_router::probe(config);
    print_out(&probed.table);
    for line in &probed.unserved {
        eprintln!("{line}");
    }
    if probed.unserved.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Writes `text` to stdout; a reader that went away (`tcp-router --help | head -n 1`) is no
/// error of ours, where `print!` would panic on the broken pipe.
fn print_out(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Why the binary could not run, and the exit code scripts get for it.
#[derive(Debug)]
enum Failure {
    /// The library refused to start (configuration, bind, set-up).
    Library(Error),
    /// The pid file cannot be written.
    PidFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// What the service manager passed cannot be used; one line per problem.
    Activation(Vec<String>),
}

impl From<Error> for Failure {
    fn from(err: Error) -> Failure {
        Failure::Library(err)
    }
}

impl Failure {
    /// 2 for what the operator wrote (configuration, an unresolvable listen address), 1 for
    /// everything else (an address in use, a pid file that cannot be written).
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Library(Error::Config(_) | Error::ResolveListen { .. }) => 2,
            Failure::Library(_) | Failure::PidFile { .. } | Failure::Activation(_) => 1,
        }
    }

    /// What to print, one line each: one per problem in the configuration or in what the
    /// service manager passed; otherwise the error followed by each of its causes, separated by
    /// `: `.
    fn lines(&self) -> Vec<String> {
        let (mut lines, mut source) = match self {
            Failure::Library(err) => (err.lines(), err.source()),
            Failure::PidFile { path, source } => (
                vec![format!("cannot write pid file '{}'", path.display())],
                Some(source as &(dyn std::error::Error + 'static)),
            ),
            Failure::Activation(lines) => (lines.clone(), None),
        };
        if let Some(last) = lines.last_mut() {
            while let Some(cause) = source {
                last.push_str(&format!(": {cause}"));
                source = cause.source();
            }
        }
        lines
    }
}

/// Parses argv with argh, but with our exit codes: help on stdout with 0, a usage error as one line
/// on stderr with 2.
fn parse_args() -> Result<Args, ExitCode> {
    let argv: Vec<String> = std::env::args().collect();
    args::parse(&argv).map_err(|early| match early {
        args::Early::Print(text) => {
            print_out(&text);
            ExitCode::SUCCESS
        }
        args::Early::Usage(line) => {
            eprintln!("tcp-router: {line}");
            ExitCode::from(2)
        }
    })
}

/// Log timestamps: RFC 3339 in UTC with all nine fraction digits, so every line's timestamp has
/// one width (simplelog's own RFC 3339 drops trailing zeros).
const LOG_TIME: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
);

/// Logs to stderr, one line per record, and routes panics through the log so a bug in one
/// connection is reported like everything else instead of as a raw backtrace.
fn init_logging(level: LevelFilter) {
    let config = ConfigBuilder::new()
        .set_time_format_custom(LOG_TIME)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_configuration_problem_is_a_line_of_its_own() {
        let failure = Failure::Library(Error::Config(vec!["a.conf:1: one".into(), "two".into()]));
        assert_eq!(failure.lines(), ["a.conf:1: one", "two"]);
        let failure = Failure::Activation(vec!["three".into(), "four".into()]);
        assert_eq!(failure.lines(), ["three", "four"]);
    }

    #[test]
    fn any_other_failure_is_one_line_with_its_causes() {
        let failure = Failure::PidFile {
            path: "/run/x.pid".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(
            failure.lines(),
            ["cannot write pid file '/run/x.pid': permission denied"]
        );
    }

    #[test]
    fn log_timestamps_keep_their_trailing_zeros() {
        let at = time::OffsetDateTime::UNIX_EPOCH + std::time::Duration::from_millis(1500);
        assert_eq!(
            at.format(LOG_TIME).unwrap(),
            "1970-01-01T00:00:01.500000000Z"
        );
    }
}
