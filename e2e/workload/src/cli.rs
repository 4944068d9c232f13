//! The command line: `serve`, and the clients `get`, `load`, `grpc`, `tcp`, `banner`, `sleep`.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::Error;
use crate::client;
use crate::listen::ListenAddr;
use crate::server::{self, ServeConfig};

/// Echo servers that answer with their own name, and the clients the end-to-end suites run.
#[derive(Debug, Parser)]
#[command(name = "switchyard-echo", version)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP, gRPC, TCP line echo and a banner protocol, each answering with NAME.
    Serve(ServeArgs),
    /// Send HTTP GET requests and print each status and body.
    Get(GetArgs),
    /// Send HTTP GET requests at a constant rate and print a summary.
    Load(LoadArgs),
    /// Call grpc.health.v1.Health.
    Grpc(GrpcArgs),
    /// Send one line to a TCP echo server and print the reply.
    Tcp(TcpArgs),
    /// Read a banner server's greeting, and optionally PING it.
    Banner(BannerArgs),
    /// Wait for SIGTERM or SIGINT, then exit 0.
    Sleep,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The name every answer carries [default: $POD_NAME, else the host name].
    #[arg(long)]
    name: Option<String>,
    /// HTTP/1.1 and h2c listener, PORT or IP:PORT; repeatable.
    #[arg(long, value_name = "ADDR")]
    http: Vec<ListenAddr>,
    /// gRPC (h2c) listener.
    #[arg(long, value_name = "ADDR")]
    grpc: Option<ListenAddr>,
    /// Line-echo TCP listener (client speaks first).
    #[arg(long, value_name = "ADDR")]
    tcp: Option<ListenAddr>,
    /// Banner listener (server speaks first).
    #[arg(long, value_name = "ADDR")]
    banner: Option<ListenAddr>,
    /// How long to keep serving after SIGTERM before draining, such as 5s.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, default_value = "0s")]
    shutdown_delay: Duration,
}

/// Output format of the HTTP clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct GetArgs {
    /// An http:// URL; the host may be a DNS name.
    url: http::Uri,
    /// Number of requests.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Pause between requests, such as 100ms.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, default_value = "0s")]
    interval: Duration,
    /// Request header `NAME:VALUE`; repeatable.
    #[arg(long = "header", value_name = "K:V")]
    headers: Vec<String>,
    /// A new connection for every request, so per-connection balancing shows.
    #[arg(long)]
    new_connection: bool,
    /// HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1.
    #[arg(long)]
    http2: bool,
    /// Per-request timeout, connecting included.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, default_value = "5s")]
    timeout: Duration,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: Output,
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// An http:// URL; the host may be a DNS name.
    url: http::Uri,
    /// Requests per second, 1 to 1000.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rate: u32,
    /// How long to send, at most 300s.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Per-request timeout.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, default_value = "5s")]
    timeout: Duration,
    /// Request header `NAME:VALUE`; repeatable.
    #[arg(long = "header", value_name = "K:V")]
    headers: Vec<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: Output,
}

#[derive(Debug, clap::Args)]
struct GrpcArgs {
    /// HOST:PORT of the gRPC server; the host may be a DNS name.
    addr: String,
    /// The service whose health to ask for ("" is the server as a whole).
    #[arg(long, default_value = "")]
    service: String,
    /// Watch instead of Check, printing this many updates.
    #[arg(long, value_name = "N")]
    watch: Option<u32>,
    /// Timeout of the whole call, connecting included.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, default_value = "5s")]
    timeout: Duration,
}

#[derive(Debug, clap::Args)]
struct TcpArgs {
    /// HOST:PORT.
    addr: String,
    /// The line to send (a newline is added).
    #[arg(long)]
    send: String,
    /// Timeout of the exchange, connecting included.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, default_value = "5s")]
    timeout: Duration,
}

#[derive(Debug, clap::Args)]
struct BannerArgs {
    /// HOST:PORT.
    addr: String,
    /// Send PING after the greeting and print the reply.
    #[arg(long)]
    ping: bool,
    /// Timeout of the exchange, connecting included.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, default_value = "5s")]
    timeout: Duration,
}

/// Longest `load --duration`.
const MAX_LOAD_DURATION: Duration = Duration::from_secs(300);

/// Runs the command; the result is the process's exit code.
pub async fn run(args: Args) -> Result<u8, Error> {
    match args.command {
        Command::Serve(args) => {
            let ServeArgs {
                name,
                http,
                grpc,
                tcp,
                banner,
                shutdown_delay,
            } = args;
            let name = match name.or_else(|| std::env::var("POD_NAME").ok()) {
                Some(name) => name,
                None => hostname::get()
                    .map_err(Error::Hostname)?
                    .to_string_lossy()
                    .into_owned(),
            };
            let mut config = ServeConfig {
                name,
                http,
                grpc,
                tcp,
                banner,
                shutdown_delay,
            };
            if config.http.is_empty()
                && config.grpc.is_none()
                && config.tcp.is_none()
                && config.banner.is_none()
            {
                config.http = vec![ListenAddr::port(crate::DEFAULT_HTTP_PORT)];
                config.grpc = Some(ListenAddr::port(crate::DEFAULT_GRPC_PORT));
                config.tcp = Some(ListenAddr::port(crate::DEFAULT_TCP_PORT));
                config.banner = Some(ListenAddr::port(crate::DEFAULT_BANNER_PORT));
            }
            server::serve(config).await?;
            Ok(0)
        }
        Command::Get(args) => {
            let GetArgs {
                url,
                count,
                interval,
                headers,
                new_connection,
                http2,
                timeout,
                output,
            } = args;
            let request = client::RequestTemplate::new(url, &headers)?;
            let options = client::ClientOptions {
                new_connection,
                http2,
                timeout,
            };
            client::get(&request, &options, count, interval, output).await
        }
        Command::Load(args) => {
            let LoadArgs {
                url,
                rate,
                duration,
                timeout,
                headers,
                output,
            } = args;
            if duration > MAX_LOAD_DURATION || duration.is_zero() {
                return Err(Error::Arg {
                    flag: "--duration",
                    value: humantime::format_duration(duration).to_string(),
                    reason: format!(
                        "must be more than 0 and at most {}",
                        humantime::format_duration(MAX_LOAD_DURATION)
                    ),
                });
            }
            let request = client::RequestTemplate::new(url, &headers)?;
            let options = client::ClientOptions {
                new_connection: false,
                http2: false,
                timeout,
            };
            client::load(&request, &options, rate, duration, output).await
        }
        Command::Grpc(args) => {
            let GrpcArgs {
                addr,
                service,
                watch,
                timeout,
            } = args;
            client::grpc(&addr, &service, watch, timeout).await
        }
        Command::Tcp(args) => client::tcp(&args.addr, &args.send, args.timeout).await,
        Command::Banner(args) => client::banner(&args.addr, args.ping, args.timeout).await,
        Command::Sleep => {
            server::Termination::new()?.recv().await;
            Ok(0)
        }
    }
}
