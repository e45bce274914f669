//! The one error type of streamcore. Variants carry the stream, byte offset
//! or timestamp they concern so a failure can be traced back to the input.

use std::path::PathBuf;

/// Everything that can go wrong in streamcore.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The video bitstream (H.264 or H.265) could not be parsed at this point.
    #[error("invalid {what}: {detail}")]
    Bitstream { what: &'static str, detail: String },

    /// A valid stream uses a feature this remuxer does not implement.
    #[error("unsupported H.264 feature: {0}")]
    Unsupported(String),

    /// libavformat refused an operation.
    #[error("stream {stream}: muxer: {detail}")]
    Mux { stream: String, detail: String },

    /// A libavcodec codec (G.726 decoder, AAC encoder, resampler) failed.
    #[error("{codec}: {detail}")]
    Codec { codec: &'static str, detail: String },

    /// Reading or writing segments and playlists failed.
    #[error("storage {path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A configuration value is out of its documented range.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    pub(crate) fn bitstream(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Bitstream {
            what,
            detail: detail.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
