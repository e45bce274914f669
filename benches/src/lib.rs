//! Benchmarks and load tools for the video backbone.
