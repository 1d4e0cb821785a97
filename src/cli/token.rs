//! `arqonbus token keygen` and `arqonbus token issue`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::auth::token::{self, Claims, Role};
use crate::auth::Grant;

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make an Ed25519 signing key: writes the private key to --out (mode 0600) and prints the
    /// public key to list in the server's `auth.trusted_keys`.
    Keygen(KeygenArgs),
    /// Sign a token for a tenant and subject, and print it.
    Issue(IssueArgs),
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the private key.
    #[arg(long, default_value = "arqonbus-token.key")]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// The private key file from `token keygen`.
    #[arg(long)]
    pub key: PathBuf,
    /// The id the server gives this key in `auth.trusted_keys` (`{ id = "...", key = "..." }`);
    /// the token names it in `kid` and the server checks it against that key only. Without it
    /// the server tries every trusted key.
    #[arg(long = "key-id")]
    pub key_id: Option<String>,
    /// The bus the token is for (`aud`); a server with `auth.audience` set accepts only tokens
    /// naming it.
    #[arg(long)]
    pub audience: Option<String>,
    #[arg(long)]
    pub tenant: String,
    /// Who the token is for.
    #[arg(long)]
    pub subject: String,
    /// Roles (repeat or separate with commas).
    #[arg(long = "role", value_enum, value_delimiter = ',')]
    pub roles: Vec<Role>,
    /// Publish grants, `reality-glob:topic-pattern` (repeat for more).
    #[arg(long = "publish")]
    pub publish: Vec<String>,
    /// Subscribe and history grants, `reality-glob:topic-pattern`.
    #[arg(long = "subscribe")]
    pub subscribe: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// The only capabilities an operator manifest of this subject may claim (repeat or separate
    /// with commas); without it, any.
    #[arg(long = "capability", value_delimiter = ',')]
    pub capabilities: Option<Vec<String>>,
}

pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Keygen(args) => keygen(args),
        TokenCommand::Issue(args) => issue(args),
    }
}

fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let key = token::generate_key().context("cannot read /dev/urandom")?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if args.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(&args.out).with_context(|| {
        format!(
            "cannot create {} (use --force to replace it)",
            args.out.display()
        )
    })?;
    writeln!(file, "{}", token::encode_private(&key))?;
    eprintln!("private key written to {}", args.out.display());
    println!("{}", token::encode_public(&key.verifying_key()));
    Ok(())
}

fn issue(args: IssueArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.key)
        .with_context(|| format!("cannot read {}", args.key.display()))?;
    let key = token::decode_private(&text)
        .with_context(|| format!("{} is not a key from `token keygen`", args.key.display()))?;
    for grant in args.publish.iter().chain(&args.subscribe) {
        Grant::parse(grant).map_err(anyhow::Error::msg)?;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = Claims {
        tenant: args.tenant,
        sub: args.subject,
        roles: args.roles,
        publish: args.publish,
        subscribe: args.subscribe,
        exp: now + args.ttl,
        iat: now,
        capabilities: args.capabilities,
        kid: args.key_id,
        // A UUIDv7: unique without coordination, and sorts by issue time in a revocation file.
        jti: Some(uuid::Uuid::now_v7().to_string()),
        aud: args.audience,
    };
    // The id on stderr, so `TOKEN=$(arqonbus token issue ...)` still captures only the token;
    // it is what `jti <id>` in auth.revocation_file names.
    if let Some(jti) = &claims.jti {
        eprintln!("token id (jti): {jti}");
    }
    println!("{}", token::issue(&key, &claims));
    Ok(())
}
