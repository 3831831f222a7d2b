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
    /// Score measurement files (or JSON lines on stdin with `-`) and print one JSON
    /// line each, without a server or a database.
    Score {
        /// Measurement files (bare or in a post envelope); `-` reads JSON lines from stdin.
        #[arg(required = true)]
        files: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Pack the spool's closed hours into cans, store and index them, then remove
    /// the spool files (once; `serve` does this on a schedule).
    Upload {
        /// Can the current hour too.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Re-score measurements from the cans of a range of days with the current
    /// plugins and fingerprints, and upsert their rows.
    Rescore {
        /// First day, YYYY-MM-DD.
        #[arg(long)]
        start_day: chrono::NaiveDate,
        /// Last day, YYYY-MM-DD (inclusive).
        #[arg(long)]
        end_day: chrono::NaiveDate,
        /// Only these test names (repeatable).
        #[arg(long = "test-name")]
        test_names: Vec<String>,
        /// Only these probe countries (repeatable).
        #[arg(long = "cc")]
        ccs: Vec<String>,
        /// Print what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Start over instead of resuming an interrupted run of the same job.
        #[arg(long)]
        restart: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Work with Citizen Lab test lists.
    Testlists {
        #[command(subcommand)]
        command: TestlistsCommand,
    },
    /// Work with network names (`/api/_/asnmeta`, `/api/_/networks`).
    Asnmeta {
        #[command(subcommand)]
        command: AsnmetaCommand,
    },
    /// Work with scorer plugins.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Work with blocking fingerprints.
    Fingerprints {
        #[command(subcommand)]
        command: FingerprintsCommand,
    },
}

#[derive(Subcommand)]
enum FingerprintsCommand {
    /// Convert OONI's fingerprint files (JSON snapshots, blocking-fingerprints CSV, the
    /// 2019 CSV list) to TOML, one file per input.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where to write the TOML files.
        #[arg(long, default_value = "fingerprints")]
        out: PathBuf,
    },
    /// Validate a fingerprints directory as the engine would load it.
    Check {
        dir: PathBuf,
        /// compat or strict.
        #[arg(long, default_value = "strict")]
        mode: String,
    },
}

#[derive(Subcommand)]
enum TestlistsCommand {
    /// Replace the test lists with those of a directory (`global.csv`, `{cc}.csv`,
    /// or a checkout of citizenlab/test-lists).
    Import {
        dir: PathBuf,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum AsnmetaCommand {
    /// Replace the network names with those of a file: OONI's `all_as_org_map.json`
    /// or CAIDA's `as-org2info.txt`, either optionally gzipped.
    Import {
        file: PathBuf,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Validate a plugin file (.wasm, .wat or .toml) and try it on a sample.
    Check {
        path: PathBuf,
        /// A measurement to try the plugin on (default: a minimal one).
        #[arg(long)]
        sample: Option<PathBuf>,
    },
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
    /// Directory of scorer plugins, watched for changes (also `OONI_PLUGINS_DIR`,
    /// read with the configuration, where an empty value means bundled plugins only;
    /// clap refuses an empty flag).
    #[arg(long)]
    plugins_dir: Option<PathBuf>,
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
        if let Some(p) = self.plugins_dir {
            cfg.plugins_dir = p;
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
    let (cfg, job) = match cli.command {
        Command::Serve(c) => (c.config()?, Job::Serve),
        Command::Migrate(c) => (c.config()?, Job::Migrate),
        Command::Upload { all, common } => (common.config()?, Job::Upload { all }),
        Command::Testlists {
            command: TestlistsCommand::Import { dir, common },
        } => (common.config()?, Job::ImportTestLists(dir)),
        Command::Asnmeta {
            command: AsnmetaCommand::Import { file, common },
        } => (common.config()?, Job::ImportAsnmeta(file)),
        Command::Rescore {
            start_day,
            end_day,
            test_names,
            ccs,
            dry_run,
            restart,
            common,
        } => {
            if end_day < start_day {
                anyhow::bail!("--end-day {end_day} is before --start-day {start_day}");
            }
            let cfg = common.config()?;
            let threads = cfg.scoring_workers();
            (
                cfg,
                Job::Rescore(ooni_engine::rescore::RescoreArgs {
                    start_day,
                    end_day,
                    test_names,
                    ccs,
                    dry_run,
                    restart,
                    threads,
                    progress: true,
                }),
            )
        }
        Command::Score { files, common } => {
            let cfg = common.config()?;
            init_logging(cfg.log_format);
            let stdout = std::io::stdout();
            return ooni_engine::commands::score(&files, &cfg, &mut stdout.lock());
        }
        Command::Fingerprints {
            command: FingerprintsCommand::Import { files, out },
        } => {
            for (file, n) in ooni_engine::commands::import_fingerprints(&files, &out)? {
                println!("{}: {n} fingerprints", file.display());
            }
            return Ok(());
        }
        Command::Fingerprints {
            command: FingerprintsCommand::Check { dir, mode },
        } => {
            let mode = mode.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            match ooni_engine::fingerprints::FingerprintSet::load_dir(&dir, mode) {
                Ok(set) => {
                    println!(
                        "ok: {} DNS and {} HTTP fingerprints in {} files, version {}",
                        set.dns,
                        set.http,
                        set.files.len(),
                        set.version
                    );
                    return Ok(());
                }
                Err(e) => {
                    println!("error: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Plugins {
            command: PluginsCommand::Check { path, sample },
        } => {
            let cfg = Config::load(None)?;
            let report =
                ooni_engine::commands::check_plugin(&path, sample.as_deref(), cfg.plugin_limits());
            for l in &report.lines {
                println!("{l}");
            }
            std::process::exit(if report.ok { 0 } else { 1 });
        }
    };
    init_logging(cfg.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        match job {
            Job::Serve => ooni_engine::serve::run(cfg).await,
            Job::Migrate => {
                let store = ooni_engine::serve::open_store(&cfg).await?;
                tracing::info!(database = store.backend(), "migrations applied");
                Ok(())
            }
            Job::ImportTestLists(dir) => {
                let store = ooni_engine::serve::open_store(&cfg).await?;
                let n = ooni_engine::testlists::import(&dir, &store).await?;
                println!("{n} test-list entries imported from {}", dir.display());
                Ok(())
            }
            Job::ImportAsnmeta(file) => {
                let store = ooni_engine::serve::open_store(&cfg).await?;
                let n = ooni_engine::asnmeta::import(&file, &store).await?;
                println!("{n} network names imported from {}", file.display());
                Ok(())
            }
            Job::Upload { all } => {
                let store = ooni_engine::serve::open_store(&cfg).await?;
                let metrics = std::sync::Arc::new(ooni_engine::metrics::Metrics::default());
                let uploader = ooni_engine::serve::open_uploader(&cfg, store, metrics)?;
                let report = uploader.run_once(all).await?;
                println!("{}", serde_json::to_string(&report)?);
                Ok(())
            }
            Job::Rescore(args) => {
                let store = ooni_engine::serve::open_store(&cfg).await?;
                let objects = cfg.object_store()?;
                let fingerprints = ooni_engine::serve::open_fingerprints(&cfg)?;
                let registry = ooni_engine::serve::open_registry(&cfg, fingerprints)?;
                let mut stdout = std::io::stdout();
                let report = ooni_engine::rescore::rescore(
                    &args,
                    &store,
                    &objects,
                    registry,
                    cfg.data_dir.join("rescore"),
                    cfg.can_read_limit(),
                    &mut stdout,
                )
                .await?;
                println!("{}", serde_json::to_string(&report)?);
                Ok(())
            }
        }
    })
}

enum Job {
    Serve,
    Migrate,
    Upload { all: bool },
    ImportTestLists(PathBuf),
    ImportAsnmeta(PathBuf),
    Rescore(ooni_engine::rescore::RescoreArgs),
}
