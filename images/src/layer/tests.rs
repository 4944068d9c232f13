use super::*;

fn dir() -> Node {
    Node::Dir {
        mode: 0o755,
        owner: Owner::default(),
    }
}

fn bytes(text: &str) -> Node {
    Node::File {
        content: Content::Bytes(text.as_bytes().to_vec()),
        mode: 0o644,
        owner: Owner::default(),
    }
}

fn path(p: &str) -> ImagePath {
    ImagePath::parse(p).unwrap()
}

#[test]
fn image_paths_are_normalized_absolute_paths() {
    assert_eq!(path("/usr//bin/x").relative(), "usr/bin/x");
    assert_eq!(path("/tmp/").to_string(), "/tmp");
    for bad in ["usr/bin", "/", "/a/../b", "/a/./b", ""] {
        assert_eq!(ImagePath::parse(bad), None, "{bad}");
    }
}

#[test]
fn parents_are_implied_and_conflicts_refused() {
    let mut tree = Tree::default();
    tree.insert(&path("/usr/local/bin/app"), bytes("a"))
        .unwrap();
    assert_eq!(
        tree.paths(),
        ["usr", "usr/local", "usr/local/bin", "usr/local/bin/app"]
    );
    // The same entry twice is fine; a different one is not.
    tree.insert(&path("/usr/local/bin/app"), bytes("a"))
        .unwrap();
    let err = tree
        .insert(&path("/usr/local/bin/app"), bytes("b"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "/usr/local/bin/app: given twice with different contents"
    );
    let err = tree
        .insert(&path("/usr/local/bin/app/x"), bytes("c"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "/usr/local/bin/app: is not a directory but has entries under it"
    );
    // An explicit directory replaces an implied one; defaults never replace anything.
    let sticky = Node::Dir {
        mode: 0o1777,
        owner: Owner::default(),
    };
    tree.insert(&path("/usr/local"), sticky.clone()).unwrap();
    tree.insert_default(&path("/usr/local"), dir()).unwrap();
    tree.insert_default(&path("/usr/local/bin/app"), bytes("d"))
        .unwrap();
    let layer = tree.write_layer().unwrap();
    let mut tar = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(layer.gzip.as_slice()),
        &mut tar,
    )
    .unwrap();
    let entries = untar(&tar);
    assert_eq!(entries["usr/local/"], (0o1777, b"".to_vec()));
    assert_eq!(entries["usr/local/bin/app"], (0o644, b"a".to_vec()));
}

#[test]
fn layer_bytes_depend_only_on_the_tree() {
    let build = |order: &[(&str, &str)]| {
        let mut tree = Tree::default();
        for (p, text) in order {
            tree.insert(&path(p), bytes(text)).unwrap();
        }
        tree.insert(
            &path("/bin/sh"),
            Node::Symlink {
                target: "/nowhere".to_owned(),
            },
        )
        .unwrap();
        tree.write_layer().unwrap()
    };
    let a = build(&[("/etc/a", "1"), ("/etc/b", "2")]);
    let b = build(&[("/etc/b", "2"), ("/etc/a", "1")]);
    assert_eq!(a.gzip, b.gzip);
    assert_eq!((a.digest.clone(), a.diff_id.clone()), (b.digest, b.diff_id));
    assert_eq!(a.digest, sha256_hex(&a.gzip));
    let c = build(&[("/etc/a", "1"), ("/etc/b", "3")]);
    assert_ne!(a.digest, c.digest);
    assert_ne!(a.diff_id, c.diff_id);

    // mtime 0, root, no names, gzip header without a timestamp.
    assert_eq!(&a.gzip[4..8], &[0, 0, 0, 0], "gzip MTIME");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(a.gzip.as_slice()));
    for entry in archive.entries().unwrap() {
        let header = entry.unwrap().header().clone();
        assert_eq!(header.mtime().unwrap(), 0);
        assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
        assert_eq!(header.username().unwrap(), Some(""));
    }
}
