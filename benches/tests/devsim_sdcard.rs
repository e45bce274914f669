//! devsim as a dashcam with an SD card, against this test playing the
//! platform over real sockets: a JT/T 808 listener that logs the device in
//! and sends it 0x9205/0x9201/0x9202, and JT/T 1078 listeners that receive
//! its playback uploads. Checks the recording list (sub-packaged, hundreds
//! of entries, filtered), the timestamps and pacing of uploads at 4x and in
//! keyframe rewind, pause/resume/seek/stop, and alarm position reports.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use ingestd::jt1078::{DataType, Jt1078Event, Jt1078Packet, Jt1078Parser, SubPackage};
use ingestd::jt808::{
    self, msg, playback_control, playback_mode, speed_code, DeviceClock, GeneralReply, Jt808Event,
    Jt808Message, Jt808Parser, Location, OutHeader, PlatformCommand, Resource, ResourceList,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// devsim's first device (its default --sim-base).
const SIM: &str = "013800000000";
const STEP: Duration = Duration::from_secs(10);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A whole second an hour or so ago: BCD times carry seconds.
fn past_second(hours_ago: i64) -> i64 {
    (now_ms() - hours_ago * 3_600_000) / 1000 * 1000
}

/// The devsim process, killed when the test ends however it ends.
struct Devsim(Child);

impl Drop for Devsim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The platform's end of the device's JT/T 808 connection.
struct Platform {
    sock: TcpStream,
    parser: Jt808Parser,
    buf: BytesMut,
    serial: u16,
    clock: DeviceClock,
    /// Sub-packages received that did not complete a message yet.
    parts: u32,
    _devsim: Devsim,
}

impl Platform {
    /// Starts devsim (baseline fixture: 25 fps, a keyframe every 2 s) with
    /// `extra` flags against a new listener and logs it in.
    async fn start(extra: &[&str]) -> Platform {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let input = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/baseline.h264");
        let child = Command::new(env!("CARGO_BIN_EXE_devsim"))
            .args(["--jt808", &l.local_addr().unwrap().to_string()])
            .args(["--input", input, "--duration", "120"])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let devsim = Devsim(child);
        let (sock, _) = tokio::time::timeout(STEP, l.accept())
            .await
            .expect("devsim connects")
            .unwrap();
        let mut p = Platform {
            sock,
            parser: Jt808Parser::new(),
            buf: BytesMut::with_capacity(8192),
            serial: 0,
            clock: DeviceClock::UTC8,
            parts: 0,
            _devsim: devsim,
        };
        let reg = p.recv().await;
        assert_eq!(reg.header.msg_id, msg::REGISTER);
        assert_eq!(reg.header.sim(), SIM);
        p.send(
            msg::REGISTER_REPLY,
            &jt808::register_reply_body(reg.header.serial, 0, "code"),
        )
        .await;
        let auth = p.recv().await;
        assert_eq!(auth.header.msg_id, msg::AUTHENTICATE);
        let ok = GeneralReply {
            serial: auth.header.serial,
            msg_id: msg::AUTHENTICATE,
            result: 0,
        };
        p.send(msg::PLATFORM_REPLY, &ok.encode()).await;
        p
    }

    async fn recv(&mut self) -> Jt808Message {
        let give_up = Instant::now() + STEP;
        loop {
            while let Some(ev) = self.parser.pull() {
                match ev {
                    Jt808Event::Message(m) => return m,
                    Jt808Event::Part(_) => self.parts += 1,
                    Jt808Event::Error(e) => panic!("bad 808 frame from devsim: {e}"),
                }
            }
            self.buf.clear();
            let n = tokio::time::timeout_at(give_up.into(), self.sock.read_buf(&mut self.buf))
                .await
                .expect("devsim says something within 10 s")
                .unwrap();
            assert!(n > 0, "devsim closed the 808 connection");
            self.parser.push(&self.buf);
        }
    }

    async fn send(&mut self, msg_id: u16, body: &[u8]) -> u16 {
        let serial = self.serial;
        self.serial += 1;
        let mut out = BytesMut::new();
        let h = OutHeader {
            msg_id,
            phone: SIM,
            serial,
            version: None,
            subpackage: None,
        };
        jt808::encode_frame(&h, body, &mut out);
        self.sock.write_all(&out).await.unwrap();
        serial
    }

    async fn command(&mut self, cmd: &PlatformCommand) -> u16 {
        let body = cmd.encode_body(self.clock);
        self.send(cmd.msg_id(), &body).await
    }

    /// The next message that is not a position or heartbeat.
    async fn recv_answer(&mut self) -> Jt808Message {
        loop {
            let m = self.recv().await;
            if !matches!(m.header.msg_id, msg::LOCATION | msg::HEARTBEAT) {
                return m;
            }
        }
    }

    /// Sends `cmd` and returns the result of devsim's 0x0001 to it.
    async fn ask(&mut self, cmd: &PlatformCommand) -> u8 {
        let serial = self.command(cmd).await;
        let m = self.recv_answer().await;
        assert_eq!(m.header.msg_id, msg::TERMINAL_REPLY, "{m:?}");
        let r = GeneralReply::decode(&m.body, m.header.msg_id).unwrap();
        assert_eq!((r.serial, r.msg_id), (serial, cmd.msg_id()));
        r.result
    }

    /// Queries the card: a 0x0001 first, then the 0x1205 answering the
    /// query's serial. Returns the list and how many frames carried it.
    async fn recordings(&mut self, q: &PlatformCommand) -> (Vec<Resource>, u32) {
        let serial = self.command(q).await;
        let ack = self.recv_answer().await;
        assert_eq!(ack.header.msg_id, msg::TERMINAL_REPLY, "acknowledged first");
        assert_eq!(
            GeneralReply::decode(&ack.body, ack.header.msg_id)
                .unwrap()
                .result,
            0
        );
        self.parts = 0;
        let m = self.recv_answer().await;
        assert_eq!(m.header.msg_id, msg::RESOURCE_LIST);
        let list = ResourceList::decode(&m.body, self.clock).unwrap();
        assert_eq!(list.serial, serial);
        (list.items, self.parts + 1)
    }

    async fn playback(
        &mut self,
        media: &TcpListener,
        start_ms: i64,
        end_ms: i64,
        mode: u8,
        speed: u32,
    ) {
        let cmd = PlatformCommand::Playback {
            ip: "127.0.0.1".into(),
            tcp_port: media.local_addr().unwrap().port(),
            udp_port: 0,
            channel: 1,
            av_type: 0,
            stream_type: 0,
            storage_type: 0,
            mode,
            speed: speed_code(speed).unwrap(),
            start_ms,
            end_ms,
        };
        assert_eq!(self.ask(&cmd).await, 0);
    }

    async fn control(&mut self, channel: u8, control: u8, speed: u32, seek_ms: Option<i64>) -> u8 {
        let cmd = PlatformCommand::PlaybackControl {
            channel,
            control,
            speed: speed_code(speed).unwrap(),
            seek_ms,
        };
        self.ask(&cmd).await
    }
}

/// The receiving end of one playback upload.
struct Upload {
    sock: TcpStream,
    parser: Jt1078Parser,
    buf: BytesMut,
    accepted: Instant,
}

#[derive(Debug)]
enum Next {
    Packet(Jt1078Packet),
    Closed,
    Quiet,
}

impl Upload {
    async fn accept(l: &TcpListener) -> Upload {
        let (sock, _) = tokio::time::timeout(STEP, l.accept())
            .await
            .expect("devsim opens the upload")
            .unwrap();
        Upload {
            sock,
            parser: Jt1078Parser::new(),
            buf: BytesMut::with_capacity(64 * 1024),
            accepted: Instant::now(),
        }
    }

    async fn next(&mut self, wait: Duration) -> Next {
        let give_up = tokio::time::Instant::now() + wait;
        loop {
            match self.parser.pull() {
                Some(Jt1078Event::Packet(p)) => return Next::Packet(p),
                Some(Jt1078Event::Resync { .. }) => panic!("bad 1078 bytes from devsim"),
                None => {}
            }
            self.buf.clear();
            match tokio::time::timeout_at(give_up, self.sock.read_buf(&mut self.buf)).await {
                Err(_) => return Next::Quiet,
                Ok(Ok(0)) => return Next::Closed,
                Ok(Ok(_)) => self.parser.push(&self.buf),
                Ok(Err(e)) => panic!("upload read: {e}"),
            }
        }
    }

    /// Every packet up to the device closing the connection.
    async fn read_to_close(&mut self) -> Vec<Jt1078Packet> {
        let mut out = Vec::new();
        loop {
            match self.next(STEP).await {
                Next::Packet(p) => out.push(p),
                Next::Closed => return out,
                Next::Quiet => panic!("upload stalled after {} packets", out.len()),
            }
        }
    }

    /// Whatever arrives within `d`.
    async fn drain(&mut self, d: Duration) -> Vec<Jt1078Packet> {
        let until = Instant::now() + d;
        let mut out = Vec::new();
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.next(left).await {
                Next::Packet(p) => out.push(p),
                Next::Closed => panic!("upload closed while draining"),
                Next::Quiet => break,
            }
        }
        out
    }
}

/// The frames of an upload: (timestamp, type) of each completed frame.
fn frames(pkts: &[Jt1078Packet]) -> Vec<(i64, DataType)> {
    for p in pkts {
        assert_eq!(
            (p.sim.to_string(), p.channel),
            (SIM.to_string(), 1),
            "{p:?}"
        );
    }
    pkts.iter()
        .filter(|p| matches!(p.sub, SubPackage::Atomic | SubPackage::Last))
        .map(|p| (p.timestamp_ms.unwrap() as i64, p.data_type))
        .collect()
}

fn query(
    channel: u8,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    alarm_mask: u64,
) -> PlatformCommand {
    PlatformCommand::QueryResources {
        channel,
        start_ms,
        end_ms,
        alarm_mask,
        av_type: 0,
        stream_type: 0,
        storage_type: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_are_listed_sub_packaged_and_filtered() {
    let mut p = Platform::start(&[
        "--sd-channels",
        "1,2",
        "--sd-every-secs",
        "120",
        "--sd-hours",
        "12",
    ])
    .await;
    let any = query(0, None, None, 0);
    let (all, frames) = p.recordings(&any).await;
    // 12 h of one clip every 2 min on 2 channels; the oldest and newest
    // periods may or may not be whole at the time of the query.
    assert!((2 * 359..=2 * 360).contains(&all.len()), "{}", all.len());
    let body = 6 + 28 * all.len() as u32;
    assert_eq!(frames, body.div_ceil(1000), "sub-packages of 1000 bytes");
    let now = now_ms();
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.channel, [1, 2][i % 2], "{r:?}");
        assert_eq!(
            (r.start_ms % 120_000, r.end_ms - r.start_ms),
            (0, 60_000),
            "{r:?}"
        );
        assert!(
            r.start_ms >= now - 12 * 3_600_000 - 1_000 && r.end_ms <= now,
            "{r:?}"
        );
        assert!(r.size > 100_000, "{r:?}");
    }
    let overspeed = all.iter().filter(|r| r.alarm & 0x2 != 0).count();
    let video_alarm = all.iter().filter(|r| r.alarm >> 32 != 0).count();
    assert!((80..=130).contains(&overspeed), "every 7th: {overspeed}");
    assert!(video_alarm > 0 && overspeed + video_alarm < all.len() / 3);

    // One channel, one hour: overlapping clips only, none outside.
    let t0 = all[0].start_ms;
    let (from, to) = (t0 + 3_600_000 + 30_000, t0 + 7_200_000);
    let hour = query(2, Some(from), Some(to), 0);
    let expected: Vec<Resource> = all
        .iter()
        .filter(|r| r.channel == 2 && r.end_ms > from && r.start_ms < to)
        .cloned()
        .collect();
    assert_eq!(expected.len(), 30);
    let (got, frames) = p.recordings(&hour).await;
    assert_eq!(got, expected);
    assert_eq!(frames, 1, "a short list fits one frame");

    // Alarm mask: only the flagged clips of channel 1.
    let (from, to) = (t0 + 600_000, t0 + 6 * 3_600_000);
    let flagged = query(1, Some(from), Some(to), 0x2);
    let expected: Vec<Resource> = all
        .iter()
        .filter(|r| r.channel == 1 && r.alarm & 0x2 != 0 && r.end_ms > from && r.start_ms < to)
        .cloned()
        .collect();
    assert!(expected.len() > 10);
    assert_eq!(p.recordings(&flagged).await.0, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_forward_at_4x_has_recording_timestamps_in_a_quarter_of_the_time() {
    let mut p = Platform::start(&[]).await;
    let media = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let start = past_second(1);
    let end = start + 8_000;
    p.playback(&media, start, end, playback_mode::FAST_FORWARD, 4)
        .await;
    let mut up = Upload::accept(&media).await;
    let pkts = up.read_to_close().await;
    let wall = up.accepted.elapsed();
    let f = frames(&pkts);
    // 8 s of 25 fps, from a keyframe at the start, in recording time.
    assert_eq!(f.len(), 200);
    assert_eq!(f[0], (start, DataType::IFrame));
    assert!(f.windows(2).all(|w| w[1].0 - w[0].0 == 40), "{f:?}");
    assert_eq!(f.last().unwrap().0, end - 40);
    assert!(pkts
        .iter()
        .all(|p| (start..end).contains(&(p.timestamp_ms.unwrap() as i64))));
    // About 2 s: paced, and faster than real time.
    assert!(
        wall > Duration::from_millis(1_200) && wall < Duration::from_millis(4_800),
        "{wall:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_rewind_sends_keyframes_backwards() {
    let mut p = Platform::start(&[]).await;
    let media = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let start = past_second(2);
    p.playback(
        &media,
        start,
        start + 20_000,
        playback_mode::KEYFRAME_REWIND,
        16,
    )
    .await;
    let mut up = Upload::accept(&media).await;
    let f = frames(&up.read_to_close().await);
    let expected: Vec<_> = (0..10)
        .rev()
        .map(|k| (start + k * 2_000, DataType::IFrame))
        .collect();
    assert_eq!(f, expected);
    assert!(up.accepted.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playback_control_pauses_resumes_seeks_and_stops() {
    let mut p = Platform::start(&[]).await;
    let media = TcpListener::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(
        p.control(1, playback_control::PAUSE, 0, None).await,
        1,
        "no playback yet"
    );
    let start = past_second(3);
    p.playback(&media, start, start + 120_000, playback_mode::NORMAL, 1)
        .await;
    let mut up = Upload::accept(&media).await;
    let before = frames(&up.drain(Duration::from_millis(800)).await);
    assert!(before.len() >= 10, "{before:?}");
    assert_eq!(
        p.control(2, playback_control::PAUSE, 0, None).await,
        1,
        "other channel"
    );

    assert_eq!(p.control(1, playback_control::PAUSE, 0, None).await, 0);
    let settled = frames(&up.drain(Duration::from_millis(300)).await);
    assert!(
        matches!(up.next(Duration::from_secs(1)).await, Next::Quiet),
        "paused"
    );
    let last = settled.last().or(before.last()).unwrap().0;
    assert_eq!(p.control(1, playback_control::RESUME, 0, None).await, 0);
    let Next::Packet(first) = up.next(Duration::from_secs(1)).await else {
        panic!("not resumed");
    };
    let ts = first.timestamp_ms.unwrap() as i64;
    assert!(
        ts > last && ts <= last + 200,
        "resumes where it paused: {ts} after {last}"
    );

    // Seek: on to the keyframe at or before the time asked for.
    let seek = start + 60_500;
    assert_eq!(p.control(1, playback_control::SEEK, 0, Some(seek)).await, 0);
    let after = frames(&up.drain(Duration::from_millis(800)).await);
    let jump = after
        .iter()
        .position(|f| f.0 > start + 30_000)
        .expect("jumped");
    assert_eq!(after[jump], (start + 60_000, DataType::IFrame));
    assert!(after[jump..].windows(2).all(|w| w[1].0 - w[0].0 == 40));

    // Faster: about 8 s of recording per second.
    assert_eq!(
        p.control(1, playback_control::FAST_FORWARD, 8, None).await,
        0
    );
    up.drain(Duration::from_millis(200)).await;
    let fast = frames(&up.drain(Duration::from_secs(1)).await);
    let covered = fast.last().unwrap().0 - fast[0].0;
    assert!((4_000..=10_000).contains(&covered), "{covered} ms in 1 s");

    // Stop closes the upload at once.
    assert_eq!(p.control(1, playback_control::STOP, 0, None).await, 0);
    let t = Instant::now();
    loop {
        match up.next(Duration::from_secs(2)).await {
            Next::Packet(_) => continue,
            Next::Closed => break,
            Next::Quiet => panic!("still open after stop"),
        }
    }
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(
        p.control(1, playback_control::RESUME, 0, None).await,
        1,
        "gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_positions_carry_the_bits_while_the_alarm_lasts() {
    let mut p = Platform::start(&[
        "--alarm-at",
        "1",
        "--alarm-secs",
        "2",
        "--alarm-bits",
        "0x3",
        "--position-interval",
        "30",
        "--device-utc-offset",
        "+00:00",
    ])
    .await;
    let utc = DeviceClock::from_offset_minutes(0);
    let mut seen = Vec::new();
    let t0 = Instant::now();
    while seen.len() < 4 {
        let m = p.recv().await;
        if m.header.msg_id != msg::LOCATION {
            continue;
        }
        let l = Location::decode(&m.body).unwrap();
        // The device clock runs in UTC here: the BCD time read in UTC is now.
        let t = utc.to_unix_ms(&l.time_bcd).unwrap();
        assert!((t - now_ms()).abs() < 2_000, "{l:?}");
        seen.push((l.alarm, t0.elapsed()));
    }
    let alarms: Vec<u32> = seen.iter().map(|s| s.0).collect();
    assert_eq!(
        alarms,
        [0, 3, 3, 0],
        "login, alarm, a second later, cleared"
    );
    // Sent when they happen: about 1 s apart from the alarm on.
    for w in seen[1..].windows(2) {
        let gap = w[1].1 - w[0].1;
        assert!(
            gap > Duration::from_millis(500) && gap < Duration::from_millis(1_800),
            "{seen:?}"
        );
    }
}
