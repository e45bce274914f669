//! Helpers shared by streamcore's integration tests: fixtures, a
//! deterministic clock, and ffmpeg/ffprobe as independent readers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use streamcore::access_unit::{split_access_units, AccessUnit};
use streamcore::stream::Clock;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(name)
}

pub mod audio_check;

#[path = "../../../../fixtures/captures.rs"]
mod captures;

/// A third-party capture (see `fixtures/captures.rs`), or `None` after
/// reporting that `test` skipped it.
pub fn capture(name: &str, test: &str) -> Option<PathBuf> {
    captures::capture(name, test)
}

/// A clock starting at 2023-11-14T22:13:20Z that advances 40 ms per reading.
pub fn stepping_clock() -> Clock {
    let t = Arc::new(AtomicI64::new(1_700_000_000_000));
    Arc::new(move || t.fetch_add(40, Ordering::Relaxed))
}

/// Splits an Annex-B buffer into access units, each re-encoded as Annex-B.
pub fn access_units(data: &[u8]) -> Vec<Vec<u8>> {
    split_access_units(data)
        .iter()
        .map(AccessUnit::to_annexb)
        .collect()
}

fn run(cmd: &mut Command) -> (String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (install ffmpeg)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What `ffmpeg -v error -i INPUT -f null -` prints (empty when clean).
pub fn ffmpeg_errors(input: &Path) -> String {
    let (_, err) = run(Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(input)
        .args(["-f", "null", "-"]));
    err
}

/// MD5 of every decoded frame in display order.
pub fn frame_md5s(input: &Path) -> Vec<String> {
    let (out, _) = run(Command::new("ffmpeg")
        .args(["-nostdin", "-v", "quiet", "-i"])
        .arg(input)
        .args([
            "-map",
            "0:v",
            "-fps_mode",
            "passthrough",
            "-f",
            "framemd5",
            "-",
        ]));
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|s| s.trim().to_string()))
        .collect()
}

/// The lines (trimmed, blank ones left out) of
/// `ffprobe -v error ARGS -of csv=p=0 INPUT`, where `args` name the entries
/// (`-show_entries ...`) and optionally the streams (`-select_streams ...`).
pub fn ffprobe_csv(input: &Path, args: &[&str]) -> Vec<String> {
    let (out, _) = run(Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .args(["-of", "csv=p=0"])
        .arg(input));
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Codec names ffprobe reports for a file's streams (listed once per
/// program too).
pub fn codec_names(input: &Path) -> Vec<String> {
    ffprobe_csv(input, &["-show_entries", "stream=codec_name"])
        .iter()
        .map(|l| l.trim_end_matches(',').to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// (pts, duration, keyframe) of every video packet of a file, per ffprobe.
pub fn packets(input: &Path) -> Vec<(i64, i64, bool)> {
    ffprobe_csv(
        input,
        &[
            "-select_streams",
            "v",
            "-show_entries",
            "packet=pts,duration,flags",
        ],
    )
    .iter()
    .map(|l| {
        let f: Vec<&str> = l.split(',').collect();
        (
            f[0].parse().expect("pts"),
            f[1].parse().unwrap_or(0),
            f.get(2).is_some_and(|s| s.starts_with('K')),
        )
    })
    .collect()
}

/// (EXTINF seconds, URI) of each segment, and TARGETDURATION.
pub fn parse_playlist(text: &str) -> (Vec<(f64, String)>, u32) {
    let (segs, target) = parse_playlist_with_discontinuities(text);
    (segs.into_iter().map(|(d, u, _)| (d, u)).collect(), target)
}

/// (EXTINF seconds, URI, preceded by DISCONTINUITY) of each segment, and TARGETDURATION.
pub fn parse_playlist_with_discontinuities(text: &str) -> (Vec<(f64, String, bool)>, u32) {
    let mut disc = false;
    let mut target = 0;
    let mut segs = Vec::new();
    let mut dur = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            target = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            assert!(v.ends_with(','), "EXTINF keeps its comma: {line}");
            dur = Some(v.trim_end_matches(',').parse::<f64>().unwrap());
        } else if line == "#EXT-X-DISCONTINUITY" {
            disc = true;
        } else if !line.starts_with('#') && !line.is_empty() {
            segs.push((
                dur.take().expect("EXTINF before URI"),
                line.to_string(),
                std::mem::take(&mut disc),
            ));
        }
    }
    (segs, target)
}

/// Decodes every stream with `-xerror` (stop at the first error); what
/// ffmpeg printed at `-v error` (empty when clean).
pub fn strict_decode_errors(input: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-xerror", "-i"])
        .arg(input)
        .args(["-map", "0", "-f", "null", "-"])
        .output()
        .expect("cannot run ffmpeg (install it)");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        err
    } else {
        format!("exit {}: {err}", out.status)
    }
}
