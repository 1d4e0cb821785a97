//! `arqonbus audit verify|show`: check the audit log's hash chain, print its records.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::audit::{self, Shown};

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check every record's hash and the chain between them; name the first broken record.
    Verify {
        /// The server's data directory (holds audit.log).
        #[arg(long, default_value = "./arqonbus-data")]
        data_dir: PathBuf,
    },
    /// Print every record as one JSON object per line (with its sha256).
    Show {
        #[arg(long, default_value = "./arqonbus-data")]
        data_dir: PathBuf,
    },
}

pub fn run(args: AuditArgs) -> anyhow::Result<()> {
    match args.command {
        AuditCommand::Verify { data_dir } => {
            let chain = audit::verify(&data_dir)?;
            println!(
                "ok: {} records, chain intact, head sha256 {}",
                chain.records, chain.head
            );
            Ok(())
        }
        AuditCommand::Show { data_dir } => {
            let path = data_dir.join(audit::FILE_NAME);
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let mut out = std::io::stdout().lock();
            let mut failed = None;
            // Print what checks out, then say where the chain breaks.
            let result = audit::check_chain(&path, &bytes, |record, sha256| {
                let line = serde_json::to_string(&Shown { record, sha256 })
                    .expect("a record always serializes");
                if let Err(e) = writeln!(out, "{line}") {
                    failed.get_or_insert(e);
                }
            });
            if let Some(e) = failed {
                return Err(e.into());
            }
            let chain = result?;
            if chain.torn_bytes > 0 {
                anyhow::bail!(
                    "{}: the last {} bytes are an incomplete record",
                    path.display(),
                    chain.torn_bytes
                );
            }
            Ok(())
        }
    }
}
