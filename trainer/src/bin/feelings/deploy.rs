//! `feelings deploy`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use feelings_core::Bundle;
use feelings_trainer::deploy::{deploy, server_url, stage_run, BundleUpload, Target};

use crate::{export, values};

/// The longest `--timeout`: a day.
const MAX_TIMEOUT_SECONDS: usize = 24 * 60 * 60;

#[derive(Args)]
#[command(
    after_help = "Plain http only: to reach a gateway served over https, go through a \
    TLS-terminating proxy (or deploy from inside its network over http)."
)]
pub struct DeployArgs {
    /// A bundle folder (feelings.json, model.onnx, tokenizer.json), uploaded as it is; or a run
    /// folder (or one of its checkpoint-epoch-N folders), exported first with `feelings
    /// export`'s defaults into a temporary folder, the model named after the run folder.
    path: PathBuf,
    /// The deployment's name: 1 to 63 characters of a-z, 0-9 and -, starting with a letter or
    /// digit; it serves at /v1/deployments/NAME/classify and /d/NAME/.
    #[arg(long, value_parser = deployment_name)]
    name: String,
    /// The run's checkpoint to export: `best`, or an epoch number (from 1); run folders only
    /// [default: best].
    #[arg(long, value_parser = checkpoint)]
    checkpoint: Option<Checkpoint>,
    /// The gateway (`feelings-serve`): http://HOST:PORT[/PREFIX].
    #[arg(long, default_value = "http://127.0.0.1:8080", value_parser = server_url)]
    server: String,
    /// The gateway's admin key, sent as `Authorization: Bearer KEY`.
    #[arg(long, env = "FEELINGS_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Upload the deployment disabled: kept by the gateway, answering no requests until enabled.
    #[arg(long)]
    disabled: bool,
    /// Seconds the upload and the gateway's answer may take together, 1 to 86400.
    #[arg(long, default_value_t = 300, value_parser = values::count_in(1, MAX_TIMEOUT_SECONDS))]
    timeout: usize,
}

/// The checkpoint `--checkpoint` names.
#[derive(Clone, Copy, Debug)]
enum Checkpoint {
    /// The run's best epoch (best.json).
    Best,
    /// This epoch, numbered from 1.
    Epoch(usize),
}

/// `--checkpoint`: `best` or an epoch number, 1 or more.
fn checkpoint(text: &str) -> Result<Checkpoint, String> {
    if text.trim() == "best" {
        return Ok(Checkpoint::Best);
    }
    values::positive_count(text)
        .map(Checkpoint::Epoch)
        .map_err(|_| "must be `best` or an epoch number, 1 or more".into())
}

/// `--name`: a valid deployment name.
fn deployment_name(text: &str) -> Result<String, String> {
    feelings_core::deployment::validate_name(text).map(|()| text.to_string())
}

pub fn run(args: DeployArgs) -> Result<()> {
    let target = Target {
        server: args.server,
        name: args.name,
        enabled: !args.disabled,
        admin_key: args.admin_key.filter(|key| !key.is_empty()),
        timeout: Duration::from_secs(args.timeout as u64),
    };
    // Kept until the upload is done: the temporary folder of an exported run.
    let staged;
    let dir = if Bundle::is_in(&args.path) {
        if let Some(Checkpoint::Epoch(_)) = args.checkpoint {
            bail!(
                "{} is a bundle, which holds one model: --checkpoint applies to run folders",
                args.path.display()
            );
        }
        args.path.clone()
    } else {
        let epoch = match args.checkpoint {
            Some(Checkpoint::Epoch(e)) => Some(e),
            Some(Checkpoint::Best) | None => None,
        };
        staged = stage_run(&args.path, epoch)
            .with_context(|| format!("exporting {} to deploy it", args.path.display()))?;
        export::print_summary(&staged.exported, "a temporary folder");
        staged.dir.clone()
    };
    let upload = BundleUpload::read(&dir)?;
    tracing::info!(
        "uploading '{}' ({:.1} MB) to {} as deployment '{}'",
        upload.bundle.manifest.name,
        upload.size() as f64 / 1e6,
        target.server,
        target.name
    );
    let deployment = deploy(&upload, &target)?;
    println!(
        "deployed '{}': model '{}', bundle sha256 {}..., {}, created {}",
        deployment.name,
        deployment.model_name(),
        deployment
            .bundle_sha256
            .get(..12)
            .unwrap_or(&deployment.bundle_sha256),
        if deployment.enabled {
            "enabled"
        } else {
            "disabled (answers no requests until enabled)"
        },
        deployment.created
    );
    println!("  classify: {}", target.classify_url());
    println!("  page:     {}", target.page_url());
    Ok(())
}
