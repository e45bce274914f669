//! streamcore: the embeddable heart of the video backbone.
//!
//! Annex-B H.264 bytes in; MPEG-TS segments cut at keyframes and HLS
//! playlists out, all in-process through libavformat.

#[cfg(feature = "catalog")]
pub mod catalog;
