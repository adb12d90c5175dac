//! `watchgrid update`: release keys and bundles at build time; on the appliance, installing
//! a bundle into the inactive root slot and, after the reboot, the boot check that keeps
//! or gives up the new version (see the watchgrid-update crate).

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use watchgrid_update::bundle::{self, VerifiedBundle};
use watchgrid_update::install::{self, Options, System};
use watchgrid_update::keys::{SigningKey, TrustedKeys, TRUSTED_DIR};
use watchgrid_update::manifest::SlotIds;
use watchgrid_update::state::{self, Decision, Outcome, Phase, Progress, Record, Request};

#[derive(clap::Args)]
pub struct UpdateArgs {
    #[command(subcommand)]
    command: UpdateCommand,
}

#[derive(clap::Args)]
struct DataDir {
    #[arg(long, env = "WATCHGRID_DATA_DIR", default_value = "/var/lib/watchgrid")]
    data_dir: PathBuf,
}

#[derive(clap::Args)]
struct Trusted {
    /// The directory of trusted release keys (`*.pub`).
    #[arg(long, default_value = TRUSTED_DIR)]
    keys: PathBuf,
}

#[derive(clap::Subcommand)]
enum UpdateCommand {
    /// Make a release signing key (mode 0600); prints its public key.
    Keygen {
        #[arg(long)]
        key: PathBuf,
        /// Also write the public key here (the image trusts `*.pub` files in its key dir).
        #[arg(long)]
        public: Option<PathBuf>,
    },
    /// Print the public key of a signing key, or write it into a trusted-key directory
    /// as `ID.pub`.
    PublicKey {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Write a signed update bundle (build time).
    Bundle(BundleArgs),
    /// Check a bundle's signature and hashes and print what it holds.
    Verify {
        file: PathBuf,
        #[command(flatten)]
        trusted: Trusted,
    },
    /// Install a bundle into the inactive root slot; it boots next (as root).
    Apply {
        file: PathBuf,
        #[arg(long)]
        allow_downgrade: bool,
        /// Boots the new version gets to pass its health check.
        #[arg(long, default_value_t = install::DEFAULT_TRIES)]
        tries: u32,
        #[arg(long)]
        reboot: bool,
        #[command(flatten)]
        trusted: Trusted,
        #[command(flatten)]
        data: DataDir,
    },
    /// Install the bundle the daemon staged (the watchgrid-update.path unit runs this).
    ApplyStaged {
        #[command(flatten)]
        trusted: Trusted,
        #[command(flatten)]
        data: DataDir,
    },
    /// After a boot: keep a new version that is healthy, reboot one that is not, and
    /// record a rollback (watchgrid-boot-check.service).
    BootCheck {
        /// How long the daemon may take to become healthy.
        #[arg(long, default_value = "90")]
        timeout_secs: u64,
        #[arg(long, env = "WATCHGRID_RUNTIME_DIR", default_value = "/run/watchgrid")]
        runtime_dir: PathBuf,
        #[command(flatten)]
        data: DataDir,
    },
    /// Show the last install and its outcome.
    Status {
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(clap::Args)]
struct BundleArgs {
    #[arg(long)]
    key: PathBuf,
    #[arg(long)]
    version: String,
    /// The architecture of the machines it is for.
    #[arg(long, default_value = watchgrid_update::ARCH)]
    arch: String,
    /// The kernel command line, with @SLOT_PARTUUID@ for the root slot.
    #[arg(long)]
    cmdline: String,
    #[arg(long)]
    slot_a: String,
    #[arg(long)]
    slot_b: String,
    #[arg(long)]
    root: PathBuf,
    #[arg(long)]
    uki: PathBuf,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: UpdateArgs) -> anyhow::Result<()> {
    match args.command {
        UpdateCommand::Keygen { key, public } => keygen(&key, public.as_deref()),
        UpdateCommand::PublicKey { key, out_dir } => public_key(&key, out_dir.as_deref()),
        UpdateCommand::Bundle(a) => make_bundle(&a),
        UpdateCommand::Verify { file, trusted } => verify(&file, &trusted.keys),
        UpdateCommand::Apply {
            file,
            allow_downgrade,
            tries,
            reboot,
            trusted,
            data,
        } => {
            let request = Request {
                allow_downgrade,
                reboot,
                tries,
            };
            apply(&file, &request, &trusted.keys, &state::dir(&data.data_dir))
        }
        UpdateCommand::ApplyStaged { trusted, data } => apply_staged(&trusted.keys, &data.data_dir),
        UpdateCommand::BootCheck {
            timeout_secs,
            runtime_dir,
            data,
        } => boot_check(
            &data.data_dir,
            &runtime_dir,
            Duration::from_secs(timeout_secs),
        ),
        UpdateCommand::Status { data } => status(&data.data_dir),
    }
}

fn keygen(key: &Path, public: Option<&Path>) -> anyhow::Result<()> {
    let k = SigningKey::create(key)?;
    let line = k.public().to_base64();
    if let Some(p) = public {
        std::fs::write(
            p,
            format!("# watchgrid update key {}\n{line}\n", k.public().id()),
        )
        .with_context(|| format!("writing {}", p.display()))?;
    }
    println!("{line}");
    Ok(())
}

fn public_key(key: &Path, out_dir: Option<&Path>) -> anyhow::Result<()> {
    let public = SigningKey::load(key)?.public();
    let line = public.to_base64();
    match out_dir {
        Some(dir) => {
            let path = dir.join(format!("{}.pub", public.id()));
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(
                &path,
                format!("# watchgrid update key {}\n{line}\n", public.id()),
            )
            .with_context(|| format!("writing {}", path.display()))?;
            println!("{}", path.display());
        }
        None => println!("{line}"),
    }
    Ok(())
}

fn make_bundle(a: &BundleArgs) -> anyhow::Result<()> {
    let key = SigningKey::load(&a.key)?;
    let contents = bundle::Contents {
        version: &a.version,
        arch: &a.arch,
        cmdline: &a.cmdline,
        slots: SlotIds {
            a: a.slot_a.to_ascii_lowercase(),
            b: a.slot_b.to_ascii_lowercase(),
        },
        root: &a.root,
        uki: &a.uki,
    };
    let m = bundle::create(&a.out, &key, &contents)?;
    println!(
        "{}: watchgrid {} for {}, signed by key {}, root {} bytes, kernel image {} bytes",
        a.out.display(),
        m.version,
        m.arch,
        key.public().id(),
        m.payloads[0].size,
        m.payloads[1].size
    );
    Ok(())
}

fn verify(file: &Path, keys: &Path) -> anyhow::Result<()> {
    let b = VerifiedBundle::open(file, &TrustedKeys::load(keys)?)?;
    println!(
        "{}: watchgrid {} for {}, signed by key {}; every payload matches",
        file.display(),
        b.version,
        b.manifest.arch,
        b.key_id
    );
    Ok(())
}

/// Records the install's phase, percent, version and detail for the daemon to show.
type Report<'a> = dyn Fn(Phase, u8, Option<&str>, &str) + 'a;

fn running_version() -> watchgrid_update::semver::Version {
    watchgrid_update::running_version(env!("CARGO_PKG_VERSION"))
}

/// Verifies and installs `file`, reporting progress into the update dir (when there is
/// one) and recording the install for the boot check.
fn apply(file: &Path, request: &Request, keys: &Path, dir: &Path) -> anyhow::Result<()> {
    let report = |phase, percent, version: Option<&str>, detail: &str| {
        let p = Progress {
            phase,
            percent,
            version: version.map(Into::into),
            detail: detail.into(),
            at: state::now(),
        };
        if dir.is_dir() {
            if let Err(e) = state::write(dir, state::PROGRESS, &p) {
                eprintln!("watchgrid: cannot record progress: {e}");
            }
        }
    };
    report(
        Phase::Verifying,
        0,
        None,
        "checking the signature and hashes",
    );
    let result = verify_and_install(file, request, keys, dir, &report);
    match &result {
        Ok(done) => report(
            Phase::Done,
            100,
            Some(&done.version),
            &format!("written to slot {}; reboot to finish", done.slot),
        ),
        Err(e) => report(Phase::Failed, 0, None, &format!("{e:#}")),
    }
    let done = result?;
    println!(
        "watchgrid {} is installed in slot {} (boot entry {}, {} tries); {}",
        done.version,
        done.slot,
        done.entry,
        request.tries,
        if request.reboot {
            "rebooting"
        } else {
            "reboot to finish"
        }
    );
    if request.reboot {
        reboot()?;
    }
    Ok(())
}

fn verify_and_install(
    file: &Path,
    request: &Request,
    keys: &Path,
    dir: &Path,
    report: &Report<'_>,
) -> anyhow::Result<install::Installed> {
    let bundle = VerifiedBundle::open(file, &TrustedKeys::load(keys)?)?;
    let version = bundle.version.to_string();
    let system = System::this_machine(running_version())?;
    let options = Options {
        allow_downgrade: request.allow_downgrade,
        tries: request.tries,
    };
    let mut last = u8::MAX;
    let done = install::install(&bundle, &system, &options, &mut |percent| {
        if percent != last && percent % 5 == 0 {
            last = percent;
            report(
                Phase::Writing,
                percent,
                Some(&version),
                "writing the inactive root slot",
            );
        }
    })?;
    let record = Record {
        from_version: system.running_version.to_string(),
        from_slot: done.from_slot,
        to_version: done.version.clone(),
        to_slot: done.slot,
        generation: done.generation,
        applied_at: state::now(),
        applied_boot: state::boot_id()?,
        outcome: Outcome::Pending,
        decided_at: None,
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    state::write(dir, state::RECORD, &record)?;
    Ok(done)
}

/// The path unit's run: take the daemon's request (renaming it, so the unit does not fire
/// again), install the staged bundle, and remove it either way.
fn apply_staged(keys: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let dir = state::dir(data_dir);
    let taken = dir.join(state::TAKEN);
    std::fs::rename(dir.join(state::REQUEST), &taken).context("taking the update request")?;
    let request: Option<Request> = state::read(&dir, state::TAKEN)?;
    let _ = std::fs::remove_file(&taken);
    let Some(request) = request else {
        bail!("the update request vanished")
    };
    let staged = dir.join(state::STAGED);
    let result = apply(&staged, &request, keys, &dir);
    let _ = watchgrid_store::durable::remove_file(&staged);
    result
}

fn reboot() -> anyhow::Result<()> {
    let status = std::process::Command::new("systemctl")
        .arg("reboot")
        .status()
        .context("running systemctl reboot")?;
    if !status.success() {
        bail!("systemctl reboot failed ({status})");
    }
    Ok(())
}

fn boot_check(data_dir: &Path, runtime_dir: &Path, timeout: Duration) -> anyhow::Result<()> {
    let dir = state::dir(data_dir);
    let Some(mut record) = state::read::<Record>(&dir, state::RECORD)? else {
        println!("watchgrid-boot-check: no update to decide");
        return Ok(());
    };
    let cmdline = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    let running = watchgrid_update::slots::running_by_name(&cmdline)
        .context("the kernel command line names no root slot")?;
    let boot = state::boot_id()?;
    // Only a boot of the new version waits for its health; the others decide at once.
    let healthy = if running == record.to_slot
        && record.outcome == Outcome::Pending
        && record.applied_boot != boot
    {
        wait_healthy(runtime_dir, timeout)
    } else {
        Ok(())
    };
    let decision = state::decide(&record, running, &boot, healthy.is_ok());
    match decision {
        Decision::Nothing => {
            println!("watchgrid-boot-check: {}", record.summary());
            return Ok(());
        }
        Decision::Good => record.outcome = Outcome::Good,
        Decision::RolledBack => record.outcome = Outcome::RolledBack,
        Decision::Retry => {
            let why = healthy.err().map(|e| format!("{e:#}")).unwrap_or_default();
            println!(
                "watchgrid-boot-check: watchgrid {} is not healthy ({why}); rebooting",
                record.to_version
            );
            reboot()?;
            bail!("watchgrid {} is not healthy: {why}", record.to_version);
        }
    }
    record.decided_at = Some(state::now());
    state::write(&dir, state::RECORD, &record)?;
    println!("watchgrid-boot-check: {}", record.summary());
    tell_daemon(runtime_dir, timeout);
    Ok(())
}

/// Has the daemon audit the outcome; it may still be starting, so this retries.
fn tell_daemon(runtime_dir: &Path, timeout: Duration) {
    let start = Instant::now();
    while let Err(e) = super::backup::ask_daemon(runtime_dir, "update-decided") {
        if start.elapsed() >= timeout {
            eprintln!("watchgrid-boot-check: the daemon did not hear of the outcome: {e:#}");
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Polls the daemon's health over its local socket until it is healthy or `timeout`
/// passes; the last reason it was not.
fn wait_healthy(runtime_dir: &Path, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let answer = super::backup::ask_daemon(runtime_dir, "health");
        let why = match answer {
            Ok(body) => match String::from_utf8_lossy(&body).trim() {
                "healthy" => return Ok(()),
                other => other.to_string(),
            },
            Err(e) => format!("{e:#}"),
        };
        if start.elapsed() >= timeout {
            bail!("{why}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn status(data_dir: &Path) -> anyhow::Result<()> {
    let dir = state::dir(data_dir);
    println!("running: watchgrid {}", running_version());
    if let Some(p) = state::read::<Progress>(&dir, state::PROGRESS)? {
        println!("last install: {:?} {}% {}", p.phase, p.percent, p.detail);
    }
    match state::read::<Record>(&dir, state::RECORD)? {
        Some(r) => println!("{}", r.summary()),
        None => println!("no update installed yet"),
    }
    Ok(())
}
