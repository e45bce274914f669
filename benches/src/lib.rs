//! Benchmarks and load tools for the video backbone, and the simulated
//! dashcam's SD card `devsim` plays recordings from ([`sdcard`]).

pub mod sdcard;
