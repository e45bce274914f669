//! Copies the pinned front-end packages hlsd embeds from `web/node_modules` (installed by
//! `npm ci --prefix hlsd/web`) into OUT_DIR so `src/web.rs` can embed them with `include_bytes!`:
//! hls.js (the player), world-atlas (Natural Earth country outlines, the map's base layer) and
//! topojson-client (decodes them), each with its licence. The page must work offline, so they
//! live in the binary rather than on a CDN.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let modules = manifest.join("web/node_modules");
    // (package, file in the package, name in OUT_DIR)
    let files = [
        ("hls.js", "dist/hls.min.js", "hls.min.js"),
        ("hls.js", "LICENSE", "hls.js.LICENSE"),
        ("hls.js", "package.json", "hls.js.package.json"),
        (
            "topojson-client",
            "dist/topojson-client.min.js",
            "topojson-client.min.js",
        ),
        ("topojson-client", "LICENSE", "topojson-client.LICENSE"),
        ("world-atlas", "countries-50m.json", "countries-50m.json"),
        ("world-atlas", "countries-10m.json", "countries-10m.json"),
        ("world-atlas", "LICENSE", "world-atlas.LICENSE"),
    ];
    println!("cargo:rerun-if-changed=web/package-lock.json");
    for (package, file, name) in files {
        let src = modules.join(package).join(file);
        println!("cargo:rerun-if-changed={}", src.display());
        if let Err(e) = std::fs::copy(&src, out.join(name)) {
            panic!(
                "\n\nhlsd embeds {package} from {}: {e}\n\
                 Install the pinned front-end dependencies first:\n\n    npm ci --prefix hlsd/web\n\n\
                 (run from the repository root; needs Node.js and npm)\n",
                src.display()
            );
        }
    }
}
