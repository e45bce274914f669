//! Platform media commands of JT/T 1078-2016 sent over the JT/T 808
//! connection ([`PlatformCommand`]): 0x9101 live request, 0x9102 live
//! control, 0x9201 playback request, 0x9202 playback control and 0x9205
//! query of the device's recordings, with their body encoders and decoders
//! (the decoders serve simulated devices and tests).
//!
//! Times are Unix ms UTC in these types and `YYMMDDhhmmss` BCD in the
//! device's zone ([`DeviceClock`]) on the wire.

use bytes::BufMut;

use super::{msg, DeviceClock, Jt808Error};

/// Playback modes of 0x9201 (JT/T 1078-2016 table 24).
pub mod playback_mode {
    pub const NORMAL: u8 = 0;
    pub const FAST_FORWARD: u8 = 1;
    pub const KEYFRAME_REWIND: u8 = 2;
    pub const KEYFRAMES_ONLY: u8 = 3;
    pub const SINGLE_FRAME: u8 = 4;
}

/// Controls of 0x9202 (JT/T 1078-2016 table 26).
pub mod playback_control {
    pub const RESUME: u8 = 0;
    pub const PAUSE: u8 = 1;
    pub const STOP: u8 = 2;
    pub const FAST_FORWARD: u8 = 3;
    pub const KEYFRAME_REWIND: u8 = 4;
    pub const SEEK: u8 = 5;
    pub const KEYFRAMES_ONLY: u8 = 6;
}

/// The speed field of 0x9201/0x9202: 0 none, 1..=5 for 1x, 2x, 4x, 8x, 16x.
/// Returns the field for a multiplier, `None` for anything else.
pub fn speed_code(multiplier: u32) -> Option<u8> {
    match multiplier {
        0 => Some(0),
        1 => Some(1),
        2 => Some(2),
        4 => Some(3),
        8 => Some(4),
        16 => Some(5),
        _ => None,
    }
}

/// The multiplier a speed field names (0 and unknown codes: 1x).
pub fn speed_multiplier(code: u8) -> u32 {
    match code {
        2..=5 => 1 << (code - 1),
        _ => 1,
    }
}

/// Platform -> device commands (JT/T 1078-2016 tables 17, 19, 24, 26, 28).
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
        /// See [`playback_mode`].
        mode: u8,
        /// See [`speed_code`].
        speed: u8,
        /// Unix ms UTC; 0 is sent as zeros (for the end: to the end of
        /// the recording).
        start_ms: i64,
        end_ms: i64,
    },
    /// 0x9202: control a running playback.
    PlaybackControl {
        channel: u8,
        /// See [`playback_control`].
        control: u8,
        /// See [`speed_code`]; for fast forward and rewind.
        speed: u8,
        /// Where to seek to (Unix ms UTC); sent as zeros when `None`.
        seek_ms: Option<i64>,
    },
    /// 0x9205: ask for the list of recordings.
    QueryResources {
        /// 0 = every channel.
        channel: u8,
        /// Unix ms UTC; `None` = no bound (sent as zeros).
        start_ms: Option<i64>,
        end_ms: Option<i64>,
        /// 64-bit alarm mask (0 = any).
        alarm_mask: u64,
        /// 0 audio+video, 1 audio, 2 video, 3 audio or video.
        av_type: u8,
        /// 0 any, 1 main, 2 sub.
        stream_type: u8,
        /// 0 any, 1 main storage, 2 backup storage.
        storage_type: u8,
    },
}

/// The BCD time of an optional instant: all zeros for "none".
fn bcd_or_zero(clock: DeviceClock, ms: Option<i64>) -> [u8; 6] {
    ms.map_or([0; 6], |t| clock.to_bcd(t))
}

/// An optional BCD time: all zeros is "none"; anything else must be a date.
fn optional_time(
    clock: DeviceClock,
    t: &[u8],
    msg_id: u16,
    what: &'static str,
) -> Result<Option<i64>, Jt808Error> {
    let t: &[u8; 6] = t
        .try_into()
        .map_err(|_| Jt808Error::BadBody { msg_id, what })?;
    if t == &[0; 6] {
        return Ok(None);
    }
    clock
        .to_unix_ms(t)
        .map(Some)
        .ok_or(Jt808Error::BadBody { msg_id, what })
}

impl PlatformCommand {
    pub fn msg_id(&self) -> u16 {
        match self {
            PlatformCommand::Live { .. } => msg::LIVE_REQUEST,
            PlatformCommand::Control { .. } => msg::LIVE_CONTROL,
            PlatformCommand::Playback { .. } => msg::PLAYBACK_REQUEST,
            PlatformCommand::PlaybackControl { .. } => msg::PLAYBACK_CONTROL,
            PlatformCommand::QueryResources { .. } => msg::QUERY_RESOURCES,
        }
    }

    /// The channel the command concerns (0 = all, for a query).
    pub fn channel(&self) -> u8 {
        match self {
            PlatformCommand::Live { channel, .. }
            | PlatformCommand::Control { channel, .. }
            | PlatformCommand::Playback { channel, .. }
            | PlatformCommand::PlaybackControl { channel, .. }
            | PlatformCommand::QueryResources { channel, .. } => *channel,
        }
    }

    /// The body, with times in the device's zone.
    pub fn encode_body(&self, clock: DeviceClock) -> Vec<u8> {
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
                // 0 (no time the BCD field can hold) is sent as zeros: for the
                // end that means "to the end of the recording".
                out.put_slice(&bcd_or_zero(clock, Some(*start_ms).filter(|&t| t != 0)));
                out.put_slice(&bcd_or_zero(clock, Some(*end_ms).filter(|&t| t != 0)));
            }
            PlatformCommand::PlaybackControl {
                channel,
                control,
                speed,
                seek_ms,
            } => {
                out.put_slice(&[*channel, *control, *speed]);
                out.put_slice(&bcd_or_zero(clock, *seek_ms));
            }
            PlatformCommand::QueryResources {
                channel,
                start_ms,
                end_ms,
                alarm_mask,
                av_type,
                stream_type,
                storage_type,
            } => {
                out.put_u8(*channel);
                out.put_slice(&bcd_or_zero(clock, *start_ms));
                out.put_slice(&bcd_or_zero(clock, *end_ms));
                out.put_u64(*alarm_mask);
                out.put_slice(&[*av_type, *stream_type, *storage_type]);
            }
        }
        out
    }

    /// Decodes a platform command body (what a device does); the inverse
    /// of [`PlatformCommand::encode_body`] for the ids it knows.
    pub fn decode(msg_id: u16, body: &[u8], clock: DeviceClock) -> Result<Self, Jt808Error> {
        let bad = |what| Jt808Error::BadBody { msg_id, what };
        let time = |t: &[u8], what| optional_time(clock, t, msg_id, what);
        match msg_id {
            msg::LIVE_REQUEST | msg::PLAYBACK_REQUEST => {
                let n = *body.first().ok_or(bad("empty body"))? as usize;
                let fixed = if msg_id == msg::LIVE_REQUEST { 7 } else { 22 };
                if body.len() != 1 + n + fixed {
                    return Err(bad("body length does not match the IP length"));
                }
                let ip = std::str::from_utf8(&body[1..1 + n])
                    .map_err(|_| bad("server address is not text"))?
                    .to_string();
                let r = &body[1 + n..];
                let (tcp_port, udp_port) = (
                    u16::from_be_bytes([r[0], r[1]]),
                    u16::from_be_bytes([r[2], r[3]]),
                );
                if msg_id == msg::LIVE_REQUEST {
                    return Ok(PlatformCommand::Live {
                        ip,
                        tcp_port,
                        udp_port,
                        channel: r[4],
                        data_type: r[5],
                        stream_type: r[6],
                    });
                }
                let start_ms = time(&r[10..16], "bad start time")?.unwrap_or(0);
                let end_ms = time(&r[16..22], "bad end time")?.unwrap_or(0);
                Ok(PlatformCommand::Playback {
                    ip,
                    tcp_port,
                    udp_port,
                    channel: r[4],
                    av_type: r[5],
                    stream_type: r[6],
                    storage_type: r[7],
                    mode: r[8],
                    speed: r[9],
                    start_ms,
                    end_ms,
                })
            }
            msg::LIVE_CONTROL => match body {
                &[channel, command, close_type, stream_type] => Ok(PlatformCommand::Control {
                    channel,
                    command,
                    close_type,
                    stream_type,
                }),
                _ => Err(bad("live control body is not 4 bytes")),
            },
            msg::PLAYBACK_CONTROL => {
                if body.len() != 9 {
                    return Err(bad("playback control body is not 9 bytes"));
                }
                Ok(PlatformCommand::PlaybackControl {
                    channel: body[0],
                    control: body[1],
                    speed: body[2],
                    seek_ms: time(&body[3..9], "bad seek time")?,
                })
            }
            msg::QUERY_RESOURCES => {
                if body.len() != 24 {
                    return Err(bad("resource query body is not 24 bytes"));
                }
                Ok(PlatformCommand::QueryResources {
                    channel: body[0],
                    start_ms: time(&body[1..7], "bad start time")?,
                    end_ms: time(&body[7..13], "bad end time")?,
                    alarm_mask: u64::from_be_bytes(body[13..21].try_into().expect("8 bytes")),
                    av_type: body[21],
                    stream_type: body[22],
                    storage_type: body[23],
                })
            }
            _ => Err(bad("not a platform media command")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_709_164_800_000; // 2024-02-29 08:00:00 UTC+8

    #[test]
    fn playback_request_bytes() {
        let cmd = PlatformCommand::Playback {
            ip: "10.0.0.1".into(),
            tcp_port: 6809,
            udp_port: 0,
            channel: 2,
            av_type: 2,
            stream_type: 1,
            storage_type: 1,
            mode: playback_mode::FAST_FORWARD,
            speed: speed_code(4).unwrap(),
            start_ms: T0,
            end_ms: T0 + 61_000,
        };
        let body = cmd.encode_body(DeviceClock::UTC8);
        let mut expected = vec![8];
        expected.extend_from_slice(b"10.0.0.1");
        expected.extend_from_slice(&[0x1a, 0x99, 0, 0, 2, 2, 1, 1, 1, 3]);
        expected.extend_from_slice(&[0x24, 0x02, 0x29, 0x08, 0x00, 0x00]);
        expected.extend_from_slice(&[0x24, 0x02, 0x29, 0x08, 0x01, 0x01]);
        assert_eq!(body, expected);
        assert_eq!(
            PlatformCommand::decode(msg::PLAYBACK_REQUEST, &body, DeviceClock::UTC8).unwrap(),
            cmd
        );
        // Another zone shifts the wall-clock digits, not the instant.
        let utc = DeviceClock::from_offset_minutes(0);
        let body = cmd.encode_body(utc);
        assert_eq!(&body[body.len() - 12..][..6], [0x24, 0x02, 0x29, 0, 0, 0]);
        assert_eq!(
            PlatformCommand::decode(msg::PLAYBACK_REQUEST, &body, utc).unwrap(),
            cmd
        );
    }

    #[test]
    fn playback_control_bytes() {
        let seek = PlatformCommand::PlaybackControl {
            channel: 1,
            control: playback_control::SEEK,
            speed: 0,
            seek_ms: Some(T0 + 5_000),
        };
        let body = seek.encode_body(DeviceClock::UTC8);
        assert_eq!(body, [1, 5, 0, 0x24, 0x02, 0x29, 0x08, 0x00, 0x05]);
        assert_eq!(
            PlatformCommand::decode(msg::PLAYBACK_CONTROL, &body, DeviceClock::UTC8).unwrap(),
            seek
        );
        let pause = PlatformCommand::PlaybackControl {
            channel: 3,
            control: playback_control::PAUSE,
            speed: 0,
            seek_ms: None,
        };
        let body = pause.encode_body(DeviceClock::UTC8);
        assert_eq!(body, [3, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            PlatformCommand::decode(msg::PLAYBACK_CONTROL, &body, DeviceClock::UTC8).unwrap(),
            pause
        );
        assert!(
            PlatformCommand::decode(msg::PLAYBACK_CONTROL, &body[..8], DeviceClock::UTC8).is_err()
        );
        // A seek time that is not a date is refused, not read as "none".
        let mut bad = body.clone();
        bad[4] = 0x13;
        assert!(PlatformCommand::decode(msg::PLAYBACK_CONTROL, &bad, DeviceClock::UTC8).is_err());
    }

    #[test]
    fn resource_query_bytes() {
        let q = PlatformCommand::QueryResources {
            channel: 0,
            start_ms: Some(T0),
            end_ms: None,
            alarm_mask: 0x0000_0001_0000_0002,
            av_type: 3,
            stream_type: 0,
            storage_type: 1,
        };
        let body = q.encode_body(DeviceClock::UTC8);
        assert_eq!(body.len(), 24);
        assert_eq!(
            body,
            [0, 0x24, 0x02, 0x29, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 3, 0, 1]
        );
        assert_eq!(
            PlatformCommand::decode(msg::QUERY_RESOURCES, &body, DeviceClock::UTC8).unwrap(),
            q
        );
    }

    #[test]
    fn speed_codes() {
        for (m, c) in [(1, 1), (2, 2), (4, 3), (8, 4), (16, 5)] {
            assert_eq!(speed_code(m), Some(c));
            assert_eq!(speed_multiplier(c), m);
        }
        assert_eq!(speed_code(3), None);
        assert_eq!(speed_multiplier(0), 1);
        assert_eq!(speed_multiplier(9), 1);
    }
}
