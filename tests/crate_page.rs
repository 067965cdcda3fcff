//! The crate as crates.io and docs.rs would show it: its README renders there (no relative links
//! or images), the manifest points at real places only, the licences it declares are files it
//! carries, and a builder call needs nothing the crate root does not export.
//! `make publish-check` runs `cargo publish --dry-run` itself.

use crate::util::repo_file;

#[test]
fn the_crate_readme_has_no_relative_links_or_images() {
    let manifest = repo_file("Cargo.toml");
    assert!(manifest.contains("readme = \"README.crates-io.md\""));
    let readme = repo_file("README.crates-io.md");
    assert!(
        !readme.contains("!["),
        "an image does not render on crates.io"
    );
    for (at, _) in readme.match_indices("](") {
        let target = &readme[at + 2..];
        assert!(
            target.starts_with("https://"),
            "a relative link breaks on crates.io: {}",
            &target[..target.find(')').unwrap_or(target.len())]
        );
    }
}

#[test]
fn the_manifest_invents_no_address_and_carries_its_licences() {
    let manifest = repo_file("Cargo.toml");
    assert!(manifest.contains("documentation = \"https://docs.rs/tcp-router\""));
    for key in ["repository", "homepage"] {
        assert!(
            !manifest.lines().any(|l| l.starts_with(&format!("{key} ="))),
            "{key}: the project has no public address yet; add it the day it has one"
        );
    }
    assert!(manifest.contains("license = \"MIT OR Apache-2.0\""));
    for file in ["LICENSE-MIT", "LICENSE-APACHE"] {
        assert!(
            manifest.contains(&format!("\"/{file}\"")),
            "{file} not in include"
        );
        assert!(repo_file(file).len() > 500, "{file} is not a licence text");
    }
}

#[test]
fn a_builder_call_needs_only_the_crate_roots_exports() {
    let built = tcp_router::Forwarder::builder("127.0.0.1:0")
        .upstream("127.0.0.1:1")
        .proxy_protocol(tcp_router::Version::V1)
        .into_config();
    assert!(built.is_ok());
}
