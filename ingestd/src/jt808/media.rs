//! Platform media commands of JT/T 1078-2016 sent over the JT/T 808
//! connection ([`PlatformCommand`]): 0x9101 live request, 0x9102 live
//! control, 0x9201 playback request, and their body encoders.

use bytes::BufMut;

use super::{msg, unix_ms_to_bcd_time};

/// Platform -> device commands (JT/T 1078-2016 tables 17, 19, 24).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PlatformCommand {
    /// 0x9101: open a media connection to `ip:tcp_port`.
    Live {
        ip: String,
        tcp_port: u16,
        udp_port: u16,
        channel: u8,
        /// 0 audio+video, 1 video, 2 two-way talk, 3 listen, 4 broadcast, 5 transparent.
        data_type: u8,
        /// 0 main stream, 1 sub stream.
        stream_type: u8,
    },
    /// 0x9102: live media control.
    Control {
        channel: u8,
        /// 0 close, 1 switch stream, 2 pause, 3 resume, 4 close two-way talk.
        command: u8,
        /// 0 close audio and video, 1 close audio, 2 close video.
        close_type: u8,
        /// 0 main stream, 1 sub stream.
        stream_type: u8,
    },
    /// 0x9201: play back a recording to `ip:tcp_port`.
    Playback {
        ip: String,
        tcp_port: u16,
        udp_port: u16,
        channel: u8,
        /// 0 audio+video, 1 audio, 2 video, 3 video or audio+video.
        av_type: u8,
        /// 0 main or sub, 1 main, 2 sub.
        stream_type: u8,
        /// 0 all, 1 main storage, 2 disaster-recovery storage.
        storage_type: u8,
        /// 0 normal, 1 fast forward, 2 key-frame rewind, 3 key-frame play, 4 single frame.
        mode: u8,
        speed: u8,
        /// Unix ms UTC (sent as BCD UTC+8).
        start_ms: i64,
        end_ms: i64,
    },
}

impl PlatformCommand {
    pub fn msg_id(&self) -> u16 {
        match self {
            PlatformCommand::Live { .. } => msg::LIVE_REQUEST,
            PlatformCommand::Control { .. } => msg::LIVE_CONTROL,
            PlatformCommand::Playback { .. } => msg::PLAYBACK_REQUEST,
        }
    }

    pub fn encode_body(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            PlatformCommand::Live {
                ip,
                tcp_port,
                udp_port,
                channel,
                data_type,
                stream_type,
            } => {
                out.put_u8(ip.len() as u8);
                out.put_slice(ip.as_bytes());
                out.put_u16(*tcp_port);
                out.put_u16(*udp_port);
                out.put_slice(&[*channel, *data_type, *stream_type]);
            }
            PlatformCommand::Control {
                channel,
                command,
                close_type,
                stream_type,
            } => out.put_slice(&[*channel, *command, *close_type, *stream_type]),
            PlatformCommand::Playback {
                ip,
                tcp_port,
                udp_port,
                channel,
                av_type,
                stream_type,
                storage_type,
                mode,
                speed,
                start_ms,
                end_ms,
            } => {
                out.put_u8(ip.len() as u8);
                out.put_slice(ip.as_bytes());
                out.put_u16(*tcp_port);
                out.put_u16(*udp_port);
                out.put_slice(&[
                    *channel,
                    *av_type,
                    *stream_type,
                    *storage_type,
                    *mode,
                    *speed,
                ]);
                out.put_slice(&unix_ms_to_bcd_time(*start_ms));
                out.put_slice(&unix_ms_to_bcd_time(*end_ms));
            }
        }
        out
    }
}
