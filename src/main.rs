//! The `hookgate` binary: parses the command line, sets up logging and calls the library.

use std::process::ExitCode;

use clap::Parser;
use hookgate::cli::{Cli, Command, EXIT_CONFIG, EXIT_START, EXIT_USAGE};
use hookgate::config::Config;
use hookgate::logging::{self, LogFormat};

/// mimalloc instead of the system allocator: a request makes a few dozen small,
/// short-lived allocations, and glibc's malloc/free cost about 13% of the
/// gateway's instructions per request (docs/performance.md). Its 2.x line
/// (the `v2` feature in `Cargo.toml`): the 3.x line the crate builds by default
/// retires a page when its last block is freed and sets up a fresh one for the
/// next request, about 2,600 instructions per refused request at low rates.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    hookgate::server::no_transparent_huge_pages();
    // A command line clap refuses is a usage error (EX_USAGE, 64) like the
    // ones hookgate finds itself, not clap's own 2; `--help` and `--version`
    // exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if !matches!(command, Command::Serve) {
        logging::init(LogFormat::Text);
    }
    match command {
        Command::Check => match Config::load(&cli.config) {
            Ok(config) => {
                print!("{}", config.describe());
                for warning in &config.warnings {
                    eprintln!("warning: {warning}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(EXIT_CONFIG as u8)
            }
        },
        Command::Serve => {
            // Before the config loads: a SIGHUP meanwhile must not end the
            // process (it reloads once the gateway serves).
            let hangup = match hookgate::server::take_over_sighup() {
                Ok(hangup) => hangup,
                Err(e) => {
                    eprintln!("hookgate: {e}");
                    return ExitCode::from(EXIT_START as u8);
                }
            };
            let config = match Config::load(&cli.config) {
                Ok(config) => config,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(EXIT_CONFIG as u8);
                }
            };
            // The log format is a config setting: set up logging once the config loaded.
            logging::init(config.server.log_format);
            for warning in &config.warnings {
                tracing::warn!("{warning}");
            }
            let options = hookgate::server::RunOptions {
                config_path: Some(cli.config.clone()),
                echo: None,
                hangup: Some(hangup),
            };
            match hookgate::server::run(config, options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hookgate: {e}");
                    ExitCode::from(EXIT_START as u8)
                }
            }
        }
        Command::Sign {
            route,
            body,
            url,
            event,
        } => {
            let config = match Config::load(&cli.config) {
                Ok(config) => config,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(EXIT_CONFIG as u8);
                }
            };
            let options = hookgate::sign::SignOptions {
                body: body.as_deref(),
                url: url.as_deref(),
                event: event.as_deref(),
            };
            match hookgate::sign::sign(&config, &route, &options, std::time::SystemTime::now()) {
                Ok(signed) => {
                    println!("# a delivery for route {route:?}, signed now; timestamps expire with the route's tolerance");
                    for (name, value) in &signed.headers {
                        println!("{name}: {value}");
                    }
                    println!(
                        "
{}",
                        signed.curl
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hookgate sign: {e}");
                    ExitCode::from(EXIT_USAGE)
                }
            }
        }
        Command::Providers { markdown } => {
            print!("{}", hookgate::verify::providers::listing(markdown));
            ExitCode::SUCCESS
        }
        Command::Events { action, admin } => {
            let config = match Config::load(&cli.config) {
                Ok(config) => config,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(EXIT_CONFIG as u8);
                }
            };
            match hookgate::delivery::client::run(&config, admin.as_deref(), &action) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hookgate events: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Command::ForgetHandshake { route } => {
            let forgot = Config::load(&cli.config)
                .map_err(|e| e.to_string())
                .and_then(|config| hookgate::handshake::forget(&config, &route));
            match forgot {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hookgate forget-handshake: {e}");
                    ExitCode::from(EXIT_USAGE)
                }
            }
        }
        Command::Demo => match hookgate::demo::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hookgate demo: {e}");
                ExitCode::from(EXIT_START as u8)
            }
        },
    }
}
