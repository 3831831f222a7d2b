use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ooni_engine::config::{Config, LogFormat};
use std::net::SocketAddr;
use std::path::PathBuf;

/// OONI measurement engine: collector, scorer, store and API.
#[derive(Parser)]
#[command(name = "ooni-engine", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine: probe API, spool, scoring, database.
    Serve(Common),
    /// Apply database migrations and exit.
    Migrate(Common),
}

#[derive(Args)]
struct Common {
    /// TOML configuration file.
    #[arg(long, env = "OONI_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "OONI_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory for the spool and the default SQLite database.
    #[arg(long, env = "OONI_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long, env = "OONI_DATABASE_URL")]
    database_url: Option<String>,
}

impl Common {
    fn config(self) -> anyhow::Result<Config> {
        let mut cfg = Config::load(self.config.as_deref())?;
        if let Some(l) = self.listen {
            cfg.listen = l;
        }
        if let Some(d) = self.data_dir {
            cfg.data_dir = d;
        }
        if let Some(u) = self.database_url {
            cfg.database_url = u;
        }
        Ok(cfg)
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (cfg, serve) = match cli.command {
        Command::Serve(c) => (c.config()?, true),
        Command::Migrate(c) => (c.config()?, false),
    };
    init_logging(cfg.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        if serve {
            ooni_engine::serve::run(cfg).await
        } else {
            let store = ooni_engine::serve::open_store(&cfg).await?;
            tracing::info!(database = store.backend(), "migrations applied");
            Ok(())
        }
    })
}
