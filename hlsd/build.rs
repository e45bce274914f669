//! Copies the pinned hls.js bundle and its licence from `web/node_modules` (installed by
//! `npm ci --prefix hlsd/web`) into OUT_DIR so `src/web.rs` can embed them with `include_bytes!`.
//! The player must work offline, so the bundle lives in the binary rather than on a CDN.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dist = manifest.join("web/node_modules/hls.js");
    let files = [
        (dist.join("dist/hls.min.js"), out.join("hls.min.js")),
        (dist.join("LICENSE"), out.join("hls.js.LICENSE")),
        (dist.join("package.json"), out.join("hls.js.package.json")),
    ];
    println!("cargo:rerun-if-changed=web/package-lock.json");
    for (src, dst) in &files {
        println!("cargo:rerun-if-changed={}", src.display());
        if let Err(e) = std::fs::copy(src, dst) {
            panic!(
                "\n\nhlsd embeds hls.js from {}: {e}\n\
                 Install the pinned front-end dependencies first:\n\n    npm ci --prefix hlsd/web\n\n\
                 (run from the repository root; needs Node.js and npm)\n",
                src.display()
            );
        }
    }
}
