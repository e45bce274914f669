//! The MPEG-TS [`SegmentMuxer`]: libavformat's `mpegts` muxer writing into
//! memory.
//!
//! One muxer lives as long as its stream, so continuity counters and PCR
//! run on across segments (FFmpeg's own HLS client reports "Packet corrupt"
//! where they restart). Its output goes through a custom AVIO context into
//! whichever [`SegmentWriter`] is current, so a segment streams to storage
//! as it is produced instead of being held whole in memory. Each frame's
//! output is gathered in a buffer of the thread and handed to the writer in
//! one piece (one `write` system call for a file) before `write` returns:
//! between frames a stream holds no output of its own, only a small AVIO
//! buffer, where a buffer of several frames per stream would cost as much
//! memory as the rest of the stream together. `max_delay`
//! stays at its API default (no PCR/PTS shift); packets carry exact
//! durations; every video packet starts with an AUD so the muxer never has
//! to copy one in; PAT/PMT start every segment. Audio arrives as ADTS
//! frames, which the muxer carries as they are (stream type 0x0f).

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use ffmpeg::ffi;
use ffmpeg_next as ffmpeg;

use super::{init_ffmpeg, FinishedSegment, MuxPacket, SegmentMuxer, Track};
use crate::codec::VideoCodec;
use crate::error::{Error, Result};
use crate::storage::SegmentWriter;

/// AVIO buffer, per stream: libavformat's output reaches [`FRAME_OUT`] in
/// chunks of up to this size (22 TS packets), flushed at the end of every
/// frame.
const AVIO_BUFFER: usize = 22 * 188;

thread_local! {
    /// The TS output of the frame being muxed on this thread, on its way to
    /// the segment writer. Empty between calls: [`TsMuxer::write`] and
    /// [`TsMuxer::end_segment`] drain it before they return.
    static FRAME_OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

#[derive(Default)]
struct Sink {
    writer: Option<Box<dyn SegmentWriter>>,
    bytes: u64,
    /// First write error of the current segment. Errors are not returned to
    /// libavformat: its AVIO context would stay failed for the stream's
    /// life; the segment is dropped instead and the next one starts clean.
    error: Option<io::Error>,
}

#[derive(Clone, Default)]
struct SinkHandle(Arc<Mutex<Sink>>);

impl SinkHandle {
    /// Hands what this thread gathered for the stream to the segment's
    /// writer, in one piece.
    fn drain(&self) {
        FRAME_OUT.with_borrow_mut(|out| {
            if out.is_empty() {
                return;
            }
            let mut sink = self.0.lock().expect("sink poisoned");
            let sink = &mut *sink;
            sink.bytes += out.len() as u64;
            if sink.error.is_none() {
                match sink.writer.as_mut() {
                    Some(w) => {
                        if let Err(e) = w.write_all(out) {
                            sink.error = Some(e);
                        }
                    }
                    None => {
                        sink.error = Some(io::Error::other("muxer output with no segment open"));
                    }
                }
            }
            out.clear();
        });
    }
}

impl Write for SinkHandle {
    /// Called by libavformat's AVIO with a full (or flushed) buffer.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        FRAME_OUT.with_borrow_mut(|out| out.extend_from_slice(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A libavformat MPEG-TS muxer.
pub struct TsMuxer {
    octx: ffmpeg::format::context::Output,
    sink: SinkHandle,
    stream: String,
    tracks: usize,
    /// An audio track exists (its frames are buffered into PES packets).
    has_audio: bool,
}

impl TsMuxer {
    /// A muxer for `tracks` (one PID each, in this order); `stream` names
    /// it in errors.
    pub fn new(stream: &str, tracks: &[Track]) -> Result<Self> {
        init_ffmpeg();
        let err = |e: ffmpeg::Error| Error::Mux {
            stream: stream.to_string(),
            detail: e.to_string(),
        };
        let sink = SinkHandle::default();
        let io =
            ffmpeg::format::context::StreamIo::from_write_with_capacity(sink.clone(), AVIO_BUFFER)
                .map_err(err)?;
        let mut octx = ffmpeg::format::output_to_stream(io, None, Some("mpegts")).map_err(err)?;
        for track in tracks {
            let (codec_type, codec_id, audio) = match *track {
                Track::Video(VideoCodec::H264) => (
                    ffi::AVMediaType::AVMEDIA_TYPE_VIDEO,
                    ffi::AVCodecID::AV_CODEC_ID_H264,
                    None,
                ),
                Track::Video(VideoCodec::H265) => (
                    ffi::AVMediaType::AVMEDIA_TYPE_VIDEO,
                    ffi::AVCodecID::AV_CODEC_ID_HEVC,
                    None,
                ),
                Track::Audio(config) => (
                    ffi::AVMediaType::AVMEDIA_TYPE_AUDIO,
                    ffi::AVCodecID::AV_CODEC_ID_AAC,
                    Some(config),
                ),
            };
            let mut st = octx.add_stream(None::<ffmpeg::Codec>).map_err(err)?;
            st.set_time_base((1, 90_000));
            // SAFETY: `st` wraps a stream that avformat_new_stream just
            // allocated inside `octx`, which owns it and outlives this
            // block; its `codecpar` is allocated with it and never null.
            // Plain field stores, no aliasing: nothing else holds it yet.
            // av_channel_layout_default only writes the layout it is given.
            unsafe {
                let par = (*st.as_mut_ptr()).codecpar;
                (*par).codec_type = codec_type;
                (*par).codec_id = codec_id;
                if let Some(config) = audio {
                    (*par).sample_rate = config.sample_rate() as i32;
                    ffi::av_channel_layout_default(&mut (*par).ch_layout, config.channels as i32);
                }
            }
        }
        // SAFETY: `octx` is a live output context whose header is not written
        // yet; a plain field store. Left at -1 (auto), libavformat flushes
        // a non-seekable output such as ours after every packet; we flush
        // ourselves once a frame is wholly written (`flush_frame`), which
        // also covers audio frames the muxer only gathers.
        unsafe {
            (*octx.as_mut_ptr()).flush_packets = 0;
        }
        octx.write_header().map_err(err)?;
        Ok(TsMuxer {
            octx,
            sink,
            stream: stream.to_string(),
            tracks: tracks.len(),
            has_audio: tracks.iter().any(|t| matches!(t, Track::Audio(_))),
        })
    }
}

impl TsMuxer {
    /// Pushes what libavformat buffered for this stream through to the
    /// segment writer, leaving neither the AVIO buffer nor [`FRAME_OUT`]
    /// holding any of it.
    fn flush_frame(&mut self) {
        // SAFETY: `octx` is live with its header written; `pb` is the custom
        // AVIO context installed by output_to_stream and kept alive by
        // `octx`. avio_flush only calls our write callback, which does not
        // re-enter libav.
        unsafe {
            let pb = (*self.octx.as_mut_ptr()).pb;
            if !pb.is_null() {
                ffi::avio_flush(pb);
            }
        }
        self.sink.drain();
    }
}

impl SegmentMuxer for TsMuxer {
    fn begin_segment(&mut self, writer: Option<Box<dyn SegmentWriter>>) {
        {
            let mut sink = self.sink.0.lock().expect("sink poisoned");
            sink.writer = writer;
            sink.bytes = 0;
            sink.error = None;
        }
        // PAT and PMT open every segment. The muxer repeats them before a
        // video keyframe by itself; an audio-only segment needs asking.
        // SAFETY: `octx` is a live mpegts output context; its `priv_data`
        // is the muxer's option-carrying private context, and
        // "mpegts_flags" is one of its flag options. av_opt_set copies the
        // string; nothing is retained.
        unsafe {
            ffi::av_opt_set(
                (*self.octx.as_mut_ptr()).priv_data,
                c"mpegts_flags".as_ptr(),
                c"+resend_headers".as_ptr(),
                0,
            );
        }
    }

    fn write(&mut self, packet: &MuxPacket<'_>) -> Result<()> {
        if packet.track >= self.tracks {
            return Err(Error::Mux {
                stream: self.stream.clone(),
                detail: format!(
                    "packet for track {} of a muxer with {}",
                    packet.track, self.tracks
                ),
            });
        }
        // SAFETY: `octx` is a live output context whose header has been
        // written, and `track` names one of its streams (checked above);
        // the MPEG-TS muxer writes video PES packets out before returning
        // and copies the audio it gathers, keeping no pointer to the data.
        let ret = unsafe {
            super::write_borrowed(
                self.octx.as_mut_ptr(),
                packet.track,
                packet.data,
                (packet.pts.0, packet.dts.0, packet.duration.0),
                packet.keyframe,
            )
        };
        self.flush_frame();
        if ret < 0 {
            return Err(Error::Mux {
                stream: self.stream.clone(),
                detail: format!(
                    "writing the frame at {:?}: {}",
                    packet.pts,
                    ffmpeg::Error::from(ret)
                ),
            });
        }
        Ok(())
    }

    fn end_segment(&mut self) -> FinishedSegment {
        // SAFETY: `octx` is live with its header written; a null packet
        // asks a muxer with AVFMT_ALLOW_FLUSH (mpegts has it) to write out
        // what it buffers: mpegts gathers audio frames into PES packets of
        // up to ~2.9 kB, which would otherwise land in the next segment (an
        // audio-only segment would be left empty, the stream's last audio
        // lost).
        unsafe {
            if self.has_audio {
                ffi::av_write_frame(self.octx.as_mut_ptr(), std::ptr::null_mut());
            }
        }
        self.flush_frame();
        let mut sink = self.sink.0.lock().expect("sink poisoned");
        FinishedSegment {
            bytes: std::mem::take(&mut sink.bytes),
            writer: sink.writer.take(),
            error: sink.error.take(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{Dur90k, Ts90k};
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountingWriter {
        writes: Arc<AtomicUsize>,
        bytes: Arc<AtomicUsize>,
    }

    impl Write for CountingWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(buf.len(), Ordering::Relaxed);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl SegmentWriter for CountingWriter {
        fn commit(self: Box<Self>) -> io::Result<()> {
            Ok(())
        }
        fn abort(self: Box<Self>) {}
    }

    /// Each frame's output reaches the writer in one write (one system
    /// call for a file) before `write` returns: nothing of the stream's
    /// output waits in memory between frames.
    #[test]
    fn each_frame_reaches_the_writer_in_one_write() {
        let mut mux = TsMuxer::new("t", &[Track::Video(VideoCodec::H264)]).unwrap();
        let writes = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicUsize::new(0));
        mux.begin_segment(Some(Box::new(CountingWriter {
            writes: writes.clone(),
            bytes: bytes.clone(),
        })));
        // 100 frames of ~13.5 kB (720p at 2.7 Mbit/s and 25 fps), each
        // several times the AVIO buffer.
        let mut frame = vec![0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x65];
        frame.resize(13_500, 0x55);
        for i in 0..100i64 {
            let t = Ts90k(i * 3600);
            mux.write(&MuxPacket {
                track: 0,
                data: &frame,
                pts: t,
                dts: t,
                duration: Dur90k(3600),
                keyframe: i == 0,
            })
            .unwrap();
            assert_eq!(writes.load(Ordering::Relaxed), i as usize + 1, "frame {i}");
            // 13.5 kB in 184-byte TS payloads, all of it out.
            let out = bytes.load(Ordering::Relaxed);
            assert!(
                out >= (i as usize + 1) * 13_500 / 184 * 188,
                "frame {i}: {out} bytes out"
            );
        }
        FRAME_OUT.with_borrow(|out| assert!(out.is_empty()));
        assert!(
            mux.write(&MuxPacket {
                track: 1,
                data: &frame,
                pts: Ts90k(0),
                dts: Ts90k(0),
                duration: Dur90k(3600),
                keyframe: false,
            })
            .is_err(),
            "no second track"
        );
        let done = mux.end_segment();
        assert!(done.error.is_none());
        let (n, total) = (
            writes.load(Ordering::Relaxed),
            bytes.load(Ordering::Relaxed),
        );
        assert_eq!(total as u64, done.bytes);
        assert!(total > 100 * 13_500, "{total}");
        assert_eq!(n, 100, "the segment's end had nothing left to write");
    }
}
