//! The OCI image layout, written as one tar: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.
//!
//! JSON documents come from oci-spec's types, serialized with sorted keys (its maps are
//! `HashMap`s) and no whitespace, so their digests are stable. The index names the image with
//! the annotations containerd's importer reads: `io.containerd.image.name` (the full reference)
//! and `org.opencontainers.image.ref.name` (the tag).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use oci_spec::image::{
    ANNOTATION_REF_NAME, Arch, Descriptor, DescriptorBuilder, ImageConfiguration,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, PlatformBuilder,
};
use oci_spec::{OciSpecError, image::Digest};
use tar::{EntryType, Header};

use crate::layer::{Layer, sha256_hex};
use crate::spec::BuildError;

/// containerd's annotation for the full image name (`images/annotations.go`).
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// What was written.
#[derive(Debug)]
pub(crate) struct Written {
    /// The manifest's digest, `sha256:<hex>`: the image's identity in a runtime or registry.
    pub(crate) manifest_digest: String,
    /// The archive's size in bytes.
    pub(crate) size: u64,
}

/// Writes the image `name:tag` with `config` and its one `layer` to `out`, replacing it only once
/// it is complete.
pub(crate) fn write(
    out: &Path,
    name: &str,
    tag: &str,
    config: &ImageConfiguration,
    layer: &Layer,
) -> Result<Written, BuildError> {
    let config_json = canonical_json("image config", config)?;
    let config_desc = descriptor(MediaType::ImageConfig, &config_json, "image config")?;
    let layer_desc = DescriptorBuilder::default()
        .media_type(MediaType::ImageLayerGzip)
        .digest(digest(&layer.digest, "layer")?)
        .size(layer.gzip.len() as u64)
        .build()
        .map_err(|source| spec("layer descriptor", source))?;

    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_desc)
        .layers(vec![layer_desc])
        .build()
        .map_err(|source| spec("image manifest", source))?;
    let manifest_json = canonical_json("image manifest", &manifest)?;
    let manifest_hex = sha256_hex(&manifest_json);

    let platform = PlatformBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .build()
        .map_err(|source| spec("platform", source))?;
    let annotations = HashMap::from([
        (
            ANNOTATION_CONTAINERD_NAME.to_owned(),
            format!("{name}:{tag}"),
        ),
        (ANNOTATION_REF_NAME.to_owned(), tag.to_owned()),
    ]);
    let manifest_desc = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(digest(&manifest_hex, "image manifest")?)
        .size(manifest_json.len() as u64)
        .platform(platform)
        .annotations(annotations)
        .build()
        .map_err(|source| spec("manifest descriptor", source))?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_desc])
        .build()
        .map_err(|source| spec("image index", source))?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(|source| spec("oci-layout", source))?;

    let mut blobs = vec![
        (sha256_hex(&config_json), config_json.as_slice()),
        (layer.digest.clone(), layer.gzip.as_slice()),
        (manifest_hex.clone(), manifest_json.as_slice()),
    ];
    blobs.sort();
    let index_json = canonical_json("image index", &index)?;
    let layout_json = canonical_json("oci-layout", &layout)?;

    let partial = out.with_extension("tar.partial");
    let write_err = |source| BuildError::Write {
        path: out.to_owned(),
        source,
    };
    let file = File::create(&partial).map_err(write_err)?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    // In path order: blobs/ < index.json < oci-layout.
    directory(&mut tar, "blobs/").map_err(write_err)?;
    directory(&mut tar, "blobs/sha256/").map_err(write_err)?;
    for (hex, bytes) in blobs {
        file_entry(&mut tar, &format!("blobs/sha256/{hex}"), bytes).map_err(write_err)?;
    }
    file_entry(&mut tar, "index.json", &index_json).map_err(write_err)?;
    file_entry(&mut tar, "oci-layout", &layout_json).map_err(write_err)?;
    let file = tar
        .into_inner()
        .and_then(|w| w.into_inner().map_err(io::IntoInnerError::into_error))
        .map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    let size = file.metadata().map_err(write_err)?.len();
    drop(file);
    std::fs::rename(&partial, out).map_err(write_err)?;
    Ok(Written {
        manifest_digest: format!("sha256:{manifest_hex}"),
        size,
    })
}

fn descriptor(
    media_type: MediaType,
    bytes: &[u8],
    document: &'static str,
) -> Result<Descriptor, BuildError> {
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest(&sha256_hex(bytes), document)?)
        .size(bytes.len() as u64)
        .build()
        .map_err(|source| spec(document, source))
}

fn digest(hex: &str, document: &'static str) -> Result<Digest, BuildError> {
    format!("sha256:{hex}")
        .parse()
        .map_err(|source| spec(document, source))
}

fn spec(document: &'static str, source: OciSpecError) -> BuildError {
    BuildError::Document { document, source }
}

/// Compact JSON with every object's keys sorted, whatever map type the value uses.
pub(crate) fn canonical_json(
    document: &'static str,
    value: &impl serde::Serialize,
) -> Result<Vec<u8>, BuildError> {
    let json_err = |source| BuildError::Json { document, source };
    let mut value = serde_json::to_value(value).map_err(json_err)?;
    value.sort_all_objects();
    serde_json::to_vec(&value).map_err(json_err)
}

fn directory<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Directory);
    header.set_mode(0o755);
    header.set_mtime(0);
    header.set_size(0);
    tar.append_data(&mut header, path, io::empty())
}

fn file_entry<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> io::Result<()> {
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_size(bytes.len() as u64);
    tar.append_data(&mut header, path, bytes)
}
